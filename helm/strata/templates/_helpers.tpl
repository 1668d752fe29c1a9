{{/* Names. */}}
{{- define "strata.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "strata.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "strata.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "strata.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "kvstore"). */}}
{{- define "strata.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "strata.componentLabels" -}}
{{ include "strata.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "strata.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "strata.serviceAccountName" -}}
{{- if .root.Values.serviceAccount.create }}{{ include "strata.fullname" .root }}-{{ .component }}{{ else }}default{{ end }}
{{- end }}

{{- define "strata.schedulerService" -}}{{ include "strata.fullname" . }}-scheduler{{- end }}
{{- define "strata.schedulerReplicasService" -}}{{ include "strata.fullname" . }}-scheduler-replicas{{- end }}
{{- define "strata.kvstoreService" -}}{{ include "strata.fullname" . }}-kvstore{{- end }}
{{- define "strata.internalSecretName" -}}
{{- default (printf "%s-internal" (include "strata.fullname" .)) .Values.internalSecurity.existingSecret }}
{{- end }}
{{- define "strata.apiKeysSecretName" -}}
{{- default (printf "%s-api-keys" (include "strata.fullname" .)) .Values.frontDoor.apiKeys.existingSecret }}
{{- end }}
{{- define "strata.kvMacSecretName" -}}
{{- default (printf "%s-kv-mac" (include "strata.fullname" .)) .Values.worker.kvMac.existingSecret }}
{{- end }}
{{- define "strata.internalSecurityOn" -}}
{{- if or .Values.internalSecurity.tls.enabled .Values.internalSecurity.token.enabled }}true{{ end }}
{{- end }}

{{/* `--scheduler <replica>` for each scheduler replica, as workers and kvstores reach it: its stable DNS
name through the headless Service. One list item each. */}}
{{- define "strata.schedulerArgs" -}}
{{- range $i := until (int .Values.scheduler.replicas) }}
- --scheduler
- {{ include "strata.fullname" $ }}-scheduler-{{ $i }}.{{ include "strata.schedulerReplicasService" $ }}.{{ $.Release.Namespace }}.svc.{{ $.Values.clusterDomain }}:{{ $.Values.scheduler.ports.grpc }}
{{- end }}
{{- end }}

{{/* Flags of the internal gRPC security contract (common/grpc_security_flags.h), one list item each. */}}
{{- define "strata.securityArgs" -}}
{{- if .Values.internalSecurity.tls.enabled }}
- --tls-cert
- /etc/strata/internal/tls.crt
- --tls-key
- /etc/strata/internal/tls.key
- --tls-ca
- /etc/strata/internal/ca.crt
- --tls-server-name
- {{ .Values.internalSecurity.tls.serverName }}
{{- end }}
{{- if .Values.internalSecurity.token.enabled }}
- --auth-token-file
- /etc/strata/internal/token
{{- end }}
{{- end }}

{{- define "strata.securityVolumeMounts" -}}
{{- if include "strata.internalSecurityOn" . }}
- name: internal-security
  mountPath: /etc/strata/internal
  readOnly: true
{{- end }}
{{- end }}

{{/* The internal Secret as one role's pods mount it: ca.crt, the role's own certificate and key as tls.crt and
     tls.key (secret-internal.yaml), token. (dict "root" $ "role" "worker") */}}
{{- define "strata.securityVolumes" -}}
{{- $v := .root.Values.internalSecurity }}
{{- if include "strata.internalSecurityOn" .root }}
- name: internal-security
  secret:
    secretName: {{ include "strata.internalSecretName" .root }}
    defaultMode: 0440
    items:
      {{- if $v.tls.enabled }}
      - {key: ca.crt, path: ca.crt}
      - {key: {{ .role }}.crt, path: tls.crt}
      - {key: {{ .role }}.key, path: tls.key}
      {{- end }}
      {{- if $v.token.enabled }}
      - {key: token, path: token}
      {{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations: Prometheus scrape hints on the metrics port, and a checksum of the generated
     secrets' inputs so that a changed setting rolls the pods. (dict "root" $ "port" 9470 "extra" map) */}}
{{- define "strata.podAnnotations" -}}
{{- if .root.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Downward-API environment every daemon uses in its flags ($(POD_NAME) and friends). */}}
{{- define "strata.podEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
{{- end }}

{{/* UCX settings of the kvstores and workers. */}}
{{- define "strata.ucxEnv" -}}
{{- with .Values.ucx.tls }}
- name: UCX_TLS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.ucx.netDevices }}
- name: UCX_NET_DEVICES
  value: {{ . | quote }}
{{- end }}
{{- range $k, $v := .Values.ucx.extraEnv }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end }}

{{/* The kvstore's UCX-over-TCP listener ports, as UCX_TCP_PORT_RANGE wants them: first-last. */}}
{{- define "strata.kvstoreUcxPortRange" -}}
{{- $r := .Values.kvstore.ports.ucx }}
{{- if lt (int $r.last) (int $r.first) }}{{ fail "kvstore.ports.ucx: last is below first" }}{{ end }}
{{- printf "%d-%d" (int $r.first) (int $r.last) }}
{{- end }}

{{/* NetworkPolicy peers of the metrics and health ports: the release namespace's pods, and metricsFrom. */}}
{{- define "strata.metricsPeers" -}}
- podSelector: {}
{{- with .Values.networkPolicy.metricsFrom }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Container securityContext: the chart's, plus IPC_LOCK for kvstores and workers when RDMA is on. */}}
{{- define "strata.containerSecurityContext" -}}
{{- $sc := deepCopy .root.Values.securityContext }}
{{- if and .rdma .root.Values.rdma.enabled }}
{{- $caps := default dict $sc.capabilities }}
{{- $_ := set $caps "add" (append (default list $caps.add) "IPC_LOCK" | uniq) }}
{{- $_ := set $sc "capabilities" $caps }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* The model volume (model.source) and, for initContainer, the container that fills it. */}}
{{- define "strata.modelVolume" -}}
- name: model
{{- if eq .Values.model.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.model.pvc.claimName }}
    readOnly: true
{{- else if eq .Values.model.source "hostPath" }}
  hostPath:
    path: {{ .Values.model.hostPath.path }}
    type: Directory
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.model.initContainer.sizeLimit }}
{{- end }}
{{- end }}

{{- define "strata.modelInitContainer" -}}
{{- if eq .Values.model.source "initContainer" }}
- name: fetch-model
  image: {{ .Values.model.initContainer.image }}
  {{- with .Values.model.initContainer.command }}
  command: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.model.initContainer.args }}
  args: {{ toYaml . | nindent 4 }}
  {{- end }}
  env:
    - name: MODEL_DIR
      value: /models/{{ .Values.model.dir }}
    {{- with .Values.model.initContainer.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext: {{ toYaml .Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: model
      mountPath: /models
{{- end }}
{{- end }}

{{- define "strata.modelMount" -}}
- name: model
  mountPath: /models
  readOnly: true
{{- end }}

{{- define "strata.servedModelName" -}}
{{- default (base .Values.model.dir) .Values.model.servedName }}
{{- end }}

{{/*
--ssd-bytes: kvstore.ssd.capacityBytes when set (> 0); else 80% of the PVC (kvstore.ssd.size, a Kubernetes
quantity). The 20% left is RocksDB's: blob files keep an evicted block's bytes until blob garbage collection
rewrites them (kvstore/ssd_tier.cc), and flushes and compactions write new files before old ones go. A
capacity of the whole volume would fill it and fail every write-back (the tier then drops evictions).
*/}}
{{- define "strata.kvstoreSsdBytes" -}}
{{- $ssd := .Values.kvstore.ssd -}}
{{- if gt (int64 $ssd.capacityBytes) 0 -}}
{{- int64 $ssd.capacityBytes -}}
{{- else -}}
{{- $size := toString $ssd.size -}}
{{- $number := regexFind "^[0-9]+(\\.[0-9]+)?" $size -}}
{{- $suffix := trimPrefix $number $size -}}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "E" 1e18 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 "Ei" 1152921504606846976.0 -}}
{{- if or (eq $number "") (not (hasKey $units $suffix)) -}}
{{- fail (printf "kvstore.ssd.size %q: not a quantity this chart can size --ssd-bytes from (set kvstore.ssd.capacityBytes)" $size) -}}
{{- end -}}
{{- printf "%.0f" (floor (mulf (mulf (float64 $number) (get $units $suffix)) 0.8)) -}}
{{- end -}}
{{- end }}
