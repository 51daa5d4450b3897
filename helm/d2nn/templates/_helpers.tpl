{{/* Names: Kubernetes names are at most 63 characters; "-coordinator" is the longest suffix we add. */}}
{{- define "d2nn.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "d2nn.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "d2nn.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "d2nn.selectorLabels" -}}
app.kubernetes.io/name: {{ include "d2nn.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "d2nn.labels" -}}
helm.sh/chart: {{ include "d2nn.chart" . }}
{{ include "d2nn.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "d2nn.coordinatorName" -}}{{ include "d2nn.fullname" . }}-coordinator{{- end -}}
{{- define "d2nn.workerName" -}}{{ include "d2nn.fullname" . }}-worker{{- end -}}
{{- define "d2nn.configMapName" -}}{{ include "d2nn.fullname" . }}-config{{- end -}}
{{- define "d2nn.podGroupName" -}}{{ include "d2nn.fullname" . }}{{- end -}}

{{- define "d2nn.cookieSecretName" -}}
{{- .Values.cookie.existingSecret | default (printf "%s-cookie" (include "d2nn.fullname" .)) -}}
{{- end -}}

{{- define "d2nn.cookieSecretKey" -}}
{{- if .Values.cookie.existingSecret -}}{{ .Values.cookie.existingSecretKey }}{{- else -}}cookie{{- end -}}
{{- end -}}

{{- define "d2nn.claimName" -}}
{{- .Values.runDir.existingClaim | default (printf "%s-runs" (include "d2nn.fullname" .)) -}}
{{- end -}}

{{- define "d2nn.runName" -}}{{ .Values.run.name | default .Release.Name }}{{- end -}}
{{- define "d2nn.runDir" -}}{{ trimSuffix "/" .Values.runDir.mountPath }}/{{ include "d2nn.runName" . }}{{- end -}}

{{/* MASTER_ADDR: the coordinator Service's DNS name (namespace-qualified, cluster-domain independent). */}}
{{- define "d2nn.masterAddr" -}}{{ include "d2nn.coordinatorName" . }}.{{ .Release.Namespace }}.svc{{- end -}}

{{- define "d2nn.image" -}}
{{- $tag := .Values.image.tag -}}
{{- if not $tag -}}
{{- $tag = .Chart.AppVersion -}}
{{- if gt (int .Values.worker.gpus) 0 }}{{ $tag = printf "%s-cuda" $tag }}{{ end -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{/* Where the run config is in the coordinator container. */}}
{{- define "d2nn.configPath" -}}
{{- if or .Values.run.config .Values.run.existingConfigMap -}}
/etc/d2nn/config/config.toml
{{- else -}}
{{- .Values.run.configFile -}}
{{- end -}}
{{- end -}}

{{/*
Refuses value combinations a JSON schema cannot express, with a message naming the keys. Included by
every template, so `helm template` and `helm install` both stop on them.
*/}}
{{- define "d2nn.validate" -}}
{{- $v := .Values -}}
{{- if and $v.run.config $v.run.existingConfigMap -}}
{{- fail "run.config and run.existingConfigMap are both set: give the run config one way" -}}
{{- end -}}
{{- if and $v.run.minWorkers (gt (int $v.run.minWorkers) (int $v.worker.replicas)) -}}
{{- fail (printf "run.minWorkers (%d) is more than worker.replicas (%d)" (int $v.run.minWorkers) (int $v.worker.replicas)) -}}
{{- end -}}
{{- if and $v.gang.enabled $v.gang.minAvailable (gt (int $v.gang.minAvailable) (add1 (int $v.worker.replicas))) -}}
{{- fail (printf "gang.minAvailable (%d) is more than the pods of the job (worker.replicas + 1 = %d)" (int $v.gang.minAvailable) (add1 (int $v.worker.replicas))) -}}
{{- end -}}
{{- range $part := list "requests" "limits" -}}
{{- if hasKey ($v.worker.resources | default dict) $part -}}
{{- if hasKey (get $v.worker.resources $part | default dict) "nvidia.com/gpu" -}}
{{- fail (printf "worker.resources.%s has nvidia.com/gpu: set worker.gpus instead" $part) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if and (eq (int $v.worker.gpus) 0) (hasPrefix "cuda" $v.worker.device) -}}
{{- fail (printf "worker.device is %s but worker.gpus is 0: a CUDA device needs worker.gpus: 1" $v.worker.device) -}}
{{- end -}}
{{- end -}}

{{/* The worker's --device. */}}
{{- define "d2nn.workerDevice" -}}
{{- if .Values.worker.device -}}{{ .Values.worker.device }}{{- else if gt (int .Values.worker.gpus) 0 -}}cuda:0{{- else -}}cpu{{- end -}}
{{- end -}}

{{/* Environment shared by the coordinator and the workers: the torchrun-style variables and logging. */}}
{{- define "d2nn.commonEnv" -}}
- name: MASTER_ADDR
  value: {{ include "d2nn.masterAddr" . | quote }}
- name: MASTER_PORT
  value: {{ .Values.coordinator.port | int64 | quote }}
- name: WORLD_SIZE
  value: {{ .Values.worker.replicas | int64 | quote }}
- name: RUST_LOG
  value: {{ .Values.logging.rustLog | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* Volumes both pods mount: the run directory, the cookie, and the data claim (if any) where the pod reads
data: always the coordinator, the workers unless data.source is "coordinator". Call with (dict "root" $ "part"
"coordinator"|"worker"). */}}
{{- define "d2nn.commonVolumes" -}}
{{- $readsData := or (eq .part "coordinator") (ne (.root.Values.data.source | default "local") "coordinator") }}
{{- with .root }}
- name: run-dir
  persistentVolumeClaim:
    claimName: {{ include "d2nn.claimName" . }}
- name: cookie
  secret:
    secretName: {{ include "d2nn.cookieSecretName" . }}
    defaultMode: 0440
    items:
      - key: {{ include "d2nn.cookieSecretKey" . }}
        path: cookie
{{- with .Values.tls.secretName }}
- name: tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: {{ $.root.Values.tls.certKey }}
        path: cert.pem
      - key: {{ $.root.Values.tls.keyKey }}
        path: key.pem
      - key: {{ $.root.Values.tls.caKey }}
        path: ca.pem
{{- end }}
{{- if and .Values.data.existingClaim $readsData }}
- name: data
  persistentVolumeClaim:
    claimName: {{ .Values.data.existingClaim }}
    readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{- define "d2nn.commonMounts" -}}
{{- $readsData := or (eq .part "coordinator") (ne (.root.Values.data.source | default "local") "coordinator") }}
{{- with .root }}
- name: run-dir
  mountPath: {{ .Values.runDir.mountPath }}
- name: cookie
  mountPath: /etc/d2nn/cookie
  readOnly: true
{{- if .Values.tls.secretName }}
- name: tls
  mountPath: /etc/d2nn/tls
  readOnly: true
{{- end }}
{{- if and .Values.data.existingClaim $readsData }}
- name: data
  mountPath: /opt/d2nn/data
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/*
Pod-level settings shared by both Jobs. Call with (dict "root" $ "part" "coordinator"|"worker").
A component's own nodeSelector/tolerations/affinity replace the top-level ones when non-empty.
*/}}
{{- define "d2nn.podSpecCommon" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $part := get $v .part -}}
restartPolicy: {{ $v.restartPolicy }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds | int64 }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- if $v.gang.enabled }}
schedulerName: {{ $v.gang.schedulerName }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- with $v.podSecurityContext }}
securityContext:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($part.nodeSelector | default $v.nodeSelector) }}
nodeSelector:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($part.tolerations | default $v.tolerations) }}
tolerations:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($part.affinity | default $v.affinity) }}
affinity:
{{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Job-level failure handling shared by both Jobs. */}}
{{- define "d2nn.jobSpecCommon" -}}
backoffLimit: {{ .Values.backoffLimit | int64 }}
{{- with .Values.activeDeadlineSeconds }}
activeDeadlineSeconds: {{ . | int64 }}
{{- end }}
{{- if not (kindIs "invalid" .Values.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ .Values.ttlSecondsAfterFinished | int64 }}
{{- end }}
{{- if eq .Values.restartPolicy "Never" }}
# A pod evicted or preempted (condition DisruptionTarget) is replaced without using up backoffLimit.
podFailurePolicy:
  rules:
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
{{- end }}
{{- end -}}

{{/* Pod template metadata shared by both Jobs. Call with (dict "root" $ "part" "coordinator"|"worker"). */}}
{{- define "d2nn.podMetadata" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $part := get $v .part -}}
labels:
  {{- include "d2nn.labels" $root | nindent 2 }}
  app.kubernetes.io/component: {{ .part }}
  {{- with $v.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- if or $v.gang.enabled $part.podAnnotations }}
annotations:
  {{- if $v.gang.enabled }}
  scheduling.k8s.io/group-name: {{ include "d2nn.podGroupName" $root }}
  {{- end }}
  {{- with $part.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
A value as an environment string. Helm reads numbers from values files as float64, which print as
1e+06; whole numbers print as integers here.
*/}}
{{- define "d2nn.scalar" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{/* The TLS flags of both containers, files from the tls volume (commonVolumes); nothing without a Secret. */}}
{{- define "d2nn.tlsArgs" -}}
{{- if .Values.tls.secretName }}
- --tls-cert=/etc/d2nn/tls/cert.pem
- --tls-key=/etc/d2nn/tls/key.pem
- --tls-ca=/etc/d2nn/tls/ca.pem
{{- end }}
{{- end -}}
