#!/bin/sh
# docker/rootfs.sh DEST BIN_DIR
#
# Builds the root file system of the Deposito image in DEST/root from the release binaries in
# BIN_DIR: the commands (stripped; `deposito-replica` is the operator binary under that name,
# which carries the whole replica), exactly the shared libraries they load (as ldd lists them),
# a non-root user (65532) and /tmp; and DEST/data, the empty /data that the Dockerfile copies
# with the user's ownership (so that named volumes mounted there are writable by it). Used by
# both build paths of the Dockerfile.
set -eu
dest=$1
bin=$2
[ -x "$bin/deposito-operator" ] && [ -x "$bin/deposito" ] || {
    echo "rootfs.sh: no deposito and deposito-operator in $bin (cargo build --release --bins)" >&2
    exit 1
}
rm -rf "$dest"
mkdir -p "$dest/data"
data=$dest/data
dest=$dest/root
mkdir -p "$dest/usr/local/bin" "$dest/etc" "$dest/tmp"
strip -o "$dest/usr/local/bin/deposito-operator" "$bin/deposito-operator"
strip -o "$dest/usr/local/bin/deposito" "$bin/deposito"
ln -s deposito-operator "$dest/usr/local/bin/deposito-replica"
libs=$(ldd "$bin/deposito-operator" "$bin/deposito" |
    awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
    mkdir -p "$dest$(dirname "$lib")"
    cp -L "$lib" "$dest$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/data:/sbin/nologin\n' >"$dest/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$dest/etc/group"
chmod 1777 "$dest/tmp"
touch "$data/.keep"
echo "rootfs.sh: $(du -sh "$dest" | cut -f1) in $dest"
