# tests/cluster/node/real.sh: the real node of `tests/cluster/up --node real`, sourced by `up`.
#
# One Node, deposito-node, run by the real kubelet and kube-proxy (k8s.io/kubernetes, built by
# build-binaries --real-node) over containerd and runc from Debian's packages, with:
#   - a bridge network (deposito0, 10.244.0.1/24, the node's address) with host-local IPAM;
#     pods route only to the bridge and to the Service range 10.0.0.0/24, and iptables drops
#     anything they send elsewhere (nothing leaves the machine);
#   - kube-proxy in iptables mode (ClusterIPs, NodePorts on the node address);
#   - kube-scheduler; CoreDNS (cluster.local only, on 10.244.0.1:53);
#   - kube-router's firewall alone (--run-firewall; no routing, no service proxy), which
#     enforces NetworkPolicy with iptables and ipset on the bridge;
#   - a local-path provisioner of our own (deposito-local-path): default StorageClass
#     `deposito-local`, WaitForFirstConsumer, `local` PersistentVolumes in DIR/node/volumes;
#   - the images deposito.test/pause:1 (the static `pause` program, FROM scratch) and
#     deposito:0.1.0 (the repository's Dockerfile, prebuilt target), built with docker and
#     imported into containerd's k8s.io namespace (no registry; pulled IfNotPresent).
#
# Uses `up`'s variables (DIR, BIN, PKI, REPO, API, API_PORT) and helpers (start, wait_for, log).

NODE_NAME=deposito-node
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24
BRIDGE=deposito0
NODE_DIR=$DIR/node
CONTAINERD_SOCK=$NODE_DIR/containerd/containerd.sock
DEPOSITO_IMAGE=${DEPOSITO_IMAGE:-deposito:0.1.0}
PAUSE_IMAGE=deposito.test/pause:1

# Debian packages the node needs, installed when missing.
real_node_packages() {
    local pkgs=()
    command -v containerd >/dev/null || pkgs+=(containerd)
    command -v runc >/dev/null || pkgs+=(runc)
    [ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
    command -v iptables >/dev/null || pkgs+=(iptables)
    command -v conntrack >/dev/null || pkgs+=(conntrack)
    command -v ipset >/dev/null || pkgs+=(ipset)  # kube-router's NetworkPolicy firewall
    command -v dockerd >/dev/null || pkgs+=(docker.io)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    log "installing ${pkgs[*]}"
    apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >&2
}

# Certificates of the node's components, signed by the cluster CA (kept with the others).
real_node_certs() {
    local name subject
    while read -r name subject; do
        [ -f "$PKI/$name.crt" ] && continue
        (
            cd "$PKI"
            exec 2>>openssl.log
            openssl req -newkey rsa:2048 -nodes -keyout "$name.key" -out "$name.csr" -subj "$subject"
            printf 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' >"$name.ext"
            openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -out "$name.crt" -extfile "$name.ext"
            rm -f "$name.csr" "$name.ext"
            chmod 600 "$name.key"
        ) || { log "openssl failed for $name"; exit 1; }
    done <<EOF
node /O=system:nodes/CN=system:node:$NODE_NAME
kube-proxy /CN=system:kube-proxy
kube-scheduler /CN=system:kube-scheduler
kube-router /O=system:masters/CN=kube-router
EOF
}

kubeconfig_for() { # name: a kubeconfig with the client certificate PKI/name.crt
    local b64crt b64key b64ca
    b64ca=$(base64 -w0 <"$PKI/ca.crt"); b64crt=$(base64 -w0 <"$PKI/$1.crt"); b64key=$(base64 -w0 <"$PKI/$1.key")
    cat >"$NODE_DIR/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deposito
  cluster: {server: "$API", certificate-authority-data: $b64ca}
users:
- name: $1
  user: {client-certificate-data: $b64crt, client-key-data: $b64key}
contexts:
- name: deposito
  context: {cluster: deposito, user: $1}
current-context: deposito
EOF
    chmod 600 "$NODE_DIR/$1.kubeconfig"
}

# The bridge, before the API server (which listens on the node address), and the firewall
# rules that keep pods' traffic on the machine.
real_node_network() {
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
    fi
    ip addr replace "$NODE_IP/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    sysctl -qw net.ipv4.ip_forward=1
    [ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] || modprobe br_netfilter 2>/dev/null || true
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "bridge netfilter unavailable"
    real_node_firewall_off
    iptables -N DEPOSITO-NODE-FWD
    iptables -A DEPOSITO-NODE-FWD -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
    iptables -A DEPOSITO-NODE-FWD -i "$BRIDGE" -j DROP
    iptables -A DEPOSITO-NODE-FWD -o "$BRIDGE" ! -s "$POD_CIDR" -j DROP
    iptables -I FORWARD 1 -j DEPOSITO-NODE-FWD
    # The node address answers only on the bridge and on loopback.
    iptables -N DEPOSITO-NODE-IN
    iptables -A DEPOSITO-NODE-IN -i lo -j RETURN
    iptables -A DEPOSITO-NODE-IN -i "$BRIDGE" -j RETURN
    iptables -A DEPOSITO-NODE-IN -d "$POD_CIDR" -j DROP
    iptables -I INPUT 1 -j DEPOSITO-NODE-IN
}

real_node_firewall_off() {
    local chain parent
    for chain in DEPOSITO-NODE-FWD:FORWARD DEPOSITO-NODE-IN:INPUT; do
        parent=${chain#*:}; chain=${chain%%:*}
        while iptables -D "$parent" -j "$chain" 2>/dev/null; do :; done
        iptables -F "$chain" 2>/dev/null || true
        iptables -X "$chain" 2>/dev/null || true
    done
}

# The two images, built with docker and imported into containerd (namespace k8s.io).
real_node_images() {
    local ctx=$NODE_DIR/pause-image
    "$REPO/tests/tools/dockerd-up" "$DIR/logs/dockerd.log" || exit 1
    mkdir -p "$ctx"
    cp "$BIN/pause" "$ctx/pause"
    printf 'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n' >"$ctx/Dockerfile"
    docker build -q -t "$PAUSE_IMAGE" "$ctx" >"$DIR/logs/images.log" 2>&1 ||
        { log "docker build (pause) failed"; tail -5 "$DIR/logs/images.log" >&2; exit 1; }
    if [ -z "${DEPOSITO_IMAGE_PREBUILT:-}" ]; then
        log "building $DEPOSITO_IMAGE (docker/rootfs.sh, docker/Dockerfile.prebuilt)"
        (cd "$REPO" && docker/rootfs.sh docker/rootfs target/release &&
            docker build -q -f docker/Dockerfile.prebuilt -t "$DEPOSITO_IMAGE" .) >>"$DIR/logs/images.log" 2>&1 ||
            { log "docker build ($DEPOSITO_IMAGE) failed"; tail -5 "$DIR/logs/images.log" >&2; exit 1; }
    fi
    local image
    for image in "$PAUSE_IMAGE" "$DEPOSITO_IMAGE"; do
        docker save "$image" | ctr --address "$CONTAINERD_SOCK" -n k8s.io images import --no-unpack - \
            >>"$DIR/logs/images.log" 2>&1 || { log "importing $image failed"; exit 1; }
    done
    log "images imported: $PAUSE_IMAGE, $DEPOSITO_IMAGE"
}

real_node_containerd() {
    mkdir -p "$NODE_DIR/containerd" "$NODE_DIR/cni/net.d" "$NODE_DIR/cni/ipam"
    cat >"$NODE_DIR/cni/net.d/10-deposito.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "deposito",
  "plugins": [
    {
      "type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "isDefaultGateway": false,
      "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$NODE_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}]
      }
    }
  ]
}
EOF
    cat >"$NODE_DIR/containerd/config.toml" <<EOF
version = 2
root = "$NODE_DIR/containerd/root"
state = "$NODE_DIR/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # This machine refuses lowering a process's oom_score_adj (no CAP_SYS_RESOURCE), which the
  # kubelet asks for pod sandboxes (-998) and Guaranteed containers (-997): clamp to ours.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "${DEPOSITO_RUNC:-runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni/net.d"
EOF
    start containerd containerd --config "$NODE_DIR/containerd/config.toml"
    wait_for "containerd" 60 ctr --address "$CONTAINERD_SOCK" version
}

real_node_kubelet() {
    mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"
    kubeconfig_for node
    cat >"$NODE_DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
healthzBindAddress: 127.0.0.1
healthzPort: 0
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
podLogsDir: $NODE_DIR/pod-logs
resolvConf: ""
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 5s
EOF
    start kubelet "$BIN/kubelet" --config="$NODE_DIR/kubelet.yaml" \
        --kubeconfig="$NODE_DIR/node.kubeconfig" \
        --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet/pki" \
        --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
        --node-labels="topology.kubernetes.io/zone=zone-a" --v=1
}

real_node_proxy() {
    kubeconfig_for kube-proxy
    start kube-proxy "$BIN/kube-proxy" --kubeconfig="$NODE_DIR/kube-proxy.kubeconfig" \
        --proxy-mode=iptables --hostname-override="$NODE_NAME" --cluster-cidr="$POD_CIDR" \
        --nodeport-addresses="$NODE_IP/32" \
        --healthz-bind-address=127.0.0.1:10256 --metrics-bind-address=127.0.0.1:10249 \
        --conntrack-max-per-core=0 --v=1
}

real_node_scheduler() {
    kubeconfig_for kube-scheduler
    start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig="$NODE_DIR/kube-scheduler.kubeconfig" \
        --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 --v=1
}

real_node_dns() {
    cat >"$NODE_DIR/Corefile" <<EOF
cluster.local:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local {
        kubeconfig $PKI/admin.kubeconfig deposito
    }
}
EOF
    start coredns "$BIN/coredns" -conf "$NODE_DIR/Corefile"
}

real_node_network_policy() {
    kubeconfig_for kube-router
    start kube-router "$BIN/kube-router" --kubeconfig="$NODE_DIR/kube-router.kubeconfig" \
        --hostname-override="$NODE_NAME" --run-firewall=true --run-router=false \
        --run-service-proxy=false --run-loadbalancer=false --enable-cni=false \
        --health-port=0 --metrics-port=0 --iptables-sync-period=1m --v=1
}

real_node_storage() {
    mkdir -p "$NODE_DIR/volumes"
    start local-path "$REPO/target/release/deposito-local-path" --kubeconfig "$PKI/admin.kubeconfig" \
        --root "$NODE_DIR/volumes" --node "$NODE_NAME"
}

# Everything of the node once the control plane runs.
real_node_start() {
    real_node_containerd
    real_node_images
    real_node_scheduler
    real_node_proxy
    real_node_dns
    real_node_storage
    real_node_kubelet
    wait_for "node $NODE_NAME Ready" 120 sh -c \
        "kubectl --kubeconfig '$PKI/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
    real_node_network_policy  # it needs the Node object
}

# After the components stopped: the pods' containers, their shims and sandboxes, mounts, the
# service rules, the bridge and the firewall rules.
real_node_cleanup() {
    set +e  # best effort: every step runs whatever the one before did
    local pid
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CONTAINERD_SOCK" || true); do
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
    # Container processes the shims leave: those whose cgroup is under kubepods.
    for pid in $(grep -l kubepods /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 || true); do
        kill -KILL "$pid" 2>/dev/null || true
    done
    local m
    for m in $( { grep -o " $NODE_DIR/[^ ]*" /proc/mounts || true; } | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    local ns
    for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}' || true); do
        ip netns delete "$ns" 2>/dev/null || true
    done
    "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
    real_node_kube_chains_off
    ip link delete "$BRIDGE" 2>/dev/null || true
    real_node_firewall_off
}

# The iptables chains and ipsets of kube-proxy, the kubelet and kube-router (all named KUBE-;
# no other Kubernetes runs on a test machine). kube-router's own --cleanup-config leaves its
# rules in place here and then crashes in its service-proxy cleanup.
real_node_kube_chains_off() {
    local table chain
    for table in filter nat mangle; do
        iptables -t "$table" -S | grep -E -- '^-A [A-Z]+ .*-j KUBE-' | sed 's/^-A/-D/' |
            while read -r rule; do eval "iptables -t $table $rule" 2>/dev/null; done
        for chain in $(iptables -t "$table" -S | awk '/^-N KUBE-/ {print $2}'); do
            iptables -t "$table" -F "$chain"
        done
        for chain in $(iptables -t "$table" -S | awk '/^-N KUBE-/ {print $2}'); do
            iptables -t "$table" -X "$chain"
        done
    done
    ipset list -n 2>/dev/null | grep -E '^(KUBE-|kube-router-)' | xargs -r -n1 ipset destroy
}
