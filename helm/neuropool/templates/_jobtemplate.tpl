{{/*
The Prefect kubernetes work pool's base job template (prefect.worker.type: kubernetes): a Job per
flow run, in this namespace, with the chart's image, security context, environment, cluster
profile and TLS files. Prefect fills the {{ "{{ ... }}" }} placeholders from the variables below.
*/}}
{{- define "neuropool.baseJobTemplate" -}}
{{- $fullname := include "neuropool.fullname" . }}
job_configuration:
  command: "{{ "{{ command }}" }}"
  env: "{{ "{{ env }}" }}"
  labels: "{{ "{{ labels }}" }}"
  name: "{{ "{{ name }}" }}"
  namespace: "{{ "{{ namespace }}" }}"
  job_manifest:
    apiVersion: batch/v1
    kind: Job
    metadata:
      generateName: "{{ "{{ name }}" }}-"
      namespace: "{{ "{{ namespace }}" }}"
      labels: "{{ "{{ labels }}" }}"
    spec:
      backoffLimit: 0
      ttlSecondsAfterFinished: "{{ "{{ finished_job_ttl }}" }}"
      template:
        metadata:
          labels:
            {{- include "neuropool.labels" . | nindent 12 }}
            app.kubernetes.io/component: flow-run
        spec:
          # Not pod fields, but prefect-kubernetes refuses a template without them (its own
          # default has them here); the API server drops them with a warning.
          parallelism: 1
          completions: 1
          restartPolicy: Never
          serviceAccountName: "{{ "{{ service_account_name }}" }}"
          automountServiceAccountToken: false
          securityContext:
            {{- toYaml .Values.podSecurityContext | nindent 12 }}
          containers:
            - name: prefect-job
              image: "{{ "{{ image }}" }}"
              imagePullPolicy: "{{ "{{ image_pull_policy }}" }}"
              args: "{{ "{{ command }}" }}"
              env:
                {{- include "neuropool.env" . | nindent 16 }}
                {{- include "neuropool.prefectEnv" . | nindent 16 }}
                - name: NEUROPOOL_CLUSTER_DIR
                  value: /etc/neuropool/cluster
              resources:
                {{- toYaml .Values.prefect.worker.jobResources | nindent 16 }}
              securityContext:
                {{- toYaml .Values.securityContext | nindent 16 }}
              volumeMounts:
                - name: tmp
                  mountPath: /tmp
                - name: cluster-profile
                  mountPath: /etc/neuropool/cluster
                  readOnly: true
                {{- if .Values.tls.enabled }}{{- include "neuropool.tlsMount" . | nindent 16 }}{{- end }}
          volumes:
            - name: tmp
              emptyDir:
                sizeLimit: 2Gi
            - name: cluster-profile
              configMap:
                name: {{ $fullname }}-cluster
            {{- if .Values.tls.enabled }}{{- include "neuropool.tlsVolume" . | nindent 12 }}{{- end }}
  stream_output: "{{ "{{ stream_output }}" }}"
  job_watch_timeout_seconds: "{{ "{{ job_watch_timeout_seconds }}" }}"
  pod_watch_timeout_seconds: "{{ "{{ pod_watch_timeout_seconds }}" }}"
variables:
  type: object
  properties:
    name:
      type: string
      title: Name
    command:
      type: string
      title: Command
    env:
      type: object
      title: Environment variables
      additionalProperties:
        type: string
    labels:
      type: object
      title: Labels
      additionalProperties:
        type: string
    namespace:
      type: string
      title: Namespace
      default: {{ .Release.Namespace | quote }}
    image:
      type: string
      title: Image
      default: {{ include "neuropool.image" (dict "root" . "variant" "cpu") | quote }}
    image_pull_policy:
      type: string
      title: Image pull policy
      enum: [IfNotPresent, Always, Never]
      default: {{ .Values.image.pullPolicy | quote }}
    service_account_name:
      type: string
      title: Service account name
      default: {{ include "neuropool.serviceAccountName" . | quote }}
    finished_job_ttl:
      type: integer
      title: Finished job TTL (s)
      default: 3600
    job_watch_timeout_seconds:
      type: integer
      title: Job watch timeout (s)
    pod_watch_timeout_seconds:
      type: integer
      title: Pod watch timeout (s)
      default: 300
    stream_output:
      type: boolean
      title: Stream output
      default: true
{{- end }}
