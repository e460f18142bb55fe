{{/* The release's base name. */}}
{{- define "deposito.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels shared by every object. */}}
{{- define "deposito.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component (operator or replica). */}}
{{- define "deposito.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "deposito.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The Secret of the replicas' internal TLS certificate. */}}
{{- define "deposito.internalTLSSecret" -}}
{{ .Values.internalTLS.secretName | default (printf "%s-internal-tls" (include "deposito.fullname" .)) }}
{{- end -}}

{{- define "deposito.secretName" -}}
{{ .Values.auth.existingSecret | default (printf "%s-tokens" (include "deposito.fullname" .)) }}
{{- end -}}

{{/* Pod-level security: non-root, RuntimeDefault seccomp. */}}
{{- define "deposito.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
# Volumes whose root already has the pod's fsGroup are not walked again at every start.
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root, no privilege escalation, no capabilities. */}}
{{- define "deposito.containerSecurity" -}}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* The gateway's scheme: https when a TLS Secret is given (also the name of its port). */}}
{{- define "deposito.gatewayScheme" -}}
{{- if .Values.gateway.tls.secretName }}https{{ else }}http{{ end }}
{{- end }}

{{/* The gateway's in-cluster URL (the `helm test` pod's --server). */}}
{{- define "deposito.gatewayURL" -}}
{{ include "deposito.gatewayScheme" . }}://{{ include "deposito.fullname" . }}-gateway.{{ .Release.Namespace }}.svc:{{ .Values.gateway.service.port }}
{{- end }}

{{/*
Pod-spec scheduling fields of one workload, from (dict "root" $ "values" .Values.operator
"component" "operator"): imagePullSecrets, priorityClassName, nodeSelector, tolerations,
affinity and topologySpreadConstraints. A spread constraint without labelSelector gets the
component's selector labels. With "hook" true (the hook pods) only the nodeAffinity of affinity
is kept and the spread constraints are left out: pod (anti-)affinity terms and spread
constraints describe the workload's own pods.
*/}}
{{- define "deposito.scheduling" -}}
{{- $v := .values }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := $v.affinity | default dict }}
{{- if and .hook $affinity.nodeAffinity }}
{{- $affinity = dict "nodeAffinity" $affinity.nodeAffinity }}
{{- else if .hook }}
{{- $affinity = dict }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if and $v.topologySpreadConstraints (not .hook) }}
{{- $selector := include "deposito.selector" (dict "root" .root "component" .component) | fromYaml }}
{{- $constraints := list }}
{{- range $v.topologySpreadConstraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
Pod template labels of one component, from (dict "root" $ "values" .Values.operator
"component" "operator"): podLabels, then the selector labels (which win).
*/}}
{{- define "deposito.podLabels" -}}
{{- $labels := deepCopy (.values.podLabels | default dict) }}
{{- $labels = merge (include "deposito.selector" (dict "root" .root "component" .component) | fromYaml) $labels }}
{{- toYaml $labels }}
{{- end -}}

{{/*
A checksum of the token Secret's data under the given keys, from (dict "root" $ "keys" (list
"replica-token")), for a pod annotation that restarts the pods when their tokens change. The
chart's own Secret: the data of the rendered secret.yaml (stable when the tokens are pinned or
kept through lookup). auth.existingSecret: the data that lookup returns for it (nothing under
`helm template`, so a constant there).
*/}}
{{- define "deposito.tokensChecksum" -}}
{{- $root := .root }}
{{- $data := dict }}
{{- if $root.Values.auth.existingSecret }}
{{- $data = (lookup "v1" "Secret" $root.Release.Namespace $root.Values.auth.existingSecret).data | default dict }}
{{- else }}
{{- $data = (include (print $root.Template.BasePath "/secret.yaml") $root | fromYaml).data | default dict }}
{{- end }}
{{- $picked := dict }}
{{- range .keys }}
{{- $_ := set $picked . (get $data .) }}
{{- end }}
{{- toJson $picked | sha256sum }}
{{- end -}}
