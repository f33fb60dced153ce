{{/* Names ---------------------------------------------------------------------------------- */}}

{{- define "neuropool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name; object names append -scheduler, -worker-<group>, ... */}}
{{- define "neuropool.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "neuropool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "neuropool.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Labels: standard app.kubernetes.io/* labels; selectors use name, instance and component. */}}
{{- define "neuropool.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "neuropool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: neuropool
{{- end }}

{{- define "neuropool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "neuropool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Addresses ------------------------------------------------------------------------------ */}}

{{- define "neuropool.protocol" -}}
{{- if .Values.tls.enabled }}tls{{ else }}tcp{{ end }}
{{- end }}

{{/* The scheduler as workers and clients inside the cluster reach it. */}}
{{- define "neuropool.schedulerAddress" -}}
{{- printf "%s://%s-scheduler:%d" (include "neuropool.protocol" .) (include "neuropool.fullname" .) (int .Values.scheduler.port) }}
{{- end }}

{{- define "neuropool.prefectApiUrl" -}}
{{- if .Values.prefect.server.enabled }}
{{- printf "http://%s-prefect-server:%d/api" (include "neuropool.fullname" .) (int .Values.prefect.server.port) }}
{{- else }}
{{- required "prefect.apiUrl is required when prefect.worker.enabled and not prefect.server.enabled: give the Prefect API URL (e.g. https://prefect.lab/api), or set prefect.server.enabled=true for a bundled server" .Values.prefect.apiUrl }}
{{- end }}
{{- end }}

{{/* Images --------------------------------------------------------------------------------- */}}

{{/* Usage: include "neuropool.image" (dict "root" $ "variant" "gpu") */}}
{{- define "neuropool.image" -}}
{{- $tag := default .root.Chart.AppVersion .root.Values.image.tag }}
{{- if eq .variant "gpu" }}{{ $tag = printf "%s-gpu" $tag }}{{ end }}
{{- printf "%s:%s" .root.Values.image.repository $tag }}
{{- end }}

{{/* Pod pieces ----------------------------------------------------------------------------- */}}

{{- define "neuropool.podSpecCommon" -}}
serviceAccountName: {{ include "neuropool.serviceAccountName" . }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Environment every neuropool container gets: writable homes under /tmp, S3 settings. */}}
{{- define "neuropool.env" -}}
- name: HOME
  value: /tmp
- name: NUMBA_CACHE_DIR
  value: /tmp/numba-cache
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: DASK_TEMPORARY_DIRECTORY
  value: /tmp/dask
- name: PYTHONUNBUFFERED
  value: "1"
{{- with .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.s3.secretAccessKeyKey }}
{{- end }}
{{- with .Values.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The Prefect client's environment: API URL and, for Prefect Cloud, the key. */}}
{{- define "neuropool.prefectEnv" -}}
- name: PREFECT_API_URL
  value: {{ include "neuropool.prefectApiUrl" . | quote }}
- name: PREFECT_HOME
  value: /tmp/prefect
{{- with .Values.prefect.apiKeySecret.name }}
- name: PREFECT_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.prefect.apiKeySecret.key }}
{{- end }}
{{- end }}

{{/* TLS flags of a role (scheduler, worker); the files are the secret mounted at /etc/neuropool/tls. */}}
{{- define "neuropool.tlsArgs" -}}
{{- if .root.Values.tls.enabled -}}
- --tls-ca-file
- /etc/neuropool/tls/ca.pem
- --tls-cert
- /etc/neuropool/tls/{{ .role }}.pem
- --tls-key
- /etc/neuropool/tls/{{ .role }}-key.pem
{{- end }}
{{- end }}

{{- define "neuropool.tlsVolume" -}}
{{- if .Values.tls.enabled -}}
- name: tls
  secret:
    secretName: {{ required "tls.existingSecret is required when tls.enabled: make the files with `neuropool certs DIR --hosts ...` and `kubectl create secret generic NAME --from-file=DIR`" .Values.tls.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "neuropool.tlsMount" -}}
{{- if .Values.tls.enabled -}}
- name: tls
  mountPath: /etc/neuropool/tls
  readOnly: true
{{- end }}
{{- end }}

{{/* Worker groups -------------------------------------------------------------------------- */}}

{{/* What a worker group leaves out. */}}
{{- define "neuropool.groupDefaults" -}}
enabled: true
imageVariant: cpu
replicas: 1
nthreads: 1
memoryLimit: auto
gpus: 0
resources: {}
scratchSizeLimit: 50Gi
env: []
extraArgs: []
volumes: []
volumeMounts: []
nodeSelector: {}
tolerations: []
affinity: {}
podAnnotations: {}
pdb:
  enabled: true
  maxUnavailable: 1
{{- end }}

{{/* The enabled worker groups, each with the defaults filled in: {name: group} as YAML. */}}
{{- define "neuropool.workerGroups" -}}
{{- $out := dict }}
{{- range $name, $group := .Values.workerGroups }}
{{- $w := deepCopy $group }}
{{- range $key, $default := include "neuropool.groupDefaults" $ | fromYaml }}
{{- if not (hasKey $w $key) }}{{ $_ := set $w $key $default }}{{ end }}
{{- end }}
{{- if $w.enabled }}{{ $_ := set $out $name $w }}{{ end }}
{{- end }}
{{- toYaml $out }}
{{- end }}
