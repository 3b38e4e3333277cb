{{/* Name of the release's objects. */}}
{{- define "spamscope.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "spamscope.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: (dict "root" $ "component" "detector"). */}}
{{- define "spamscope.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "spamscope.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "spamscope.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "spamscope.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{- define "spamscope.secretName" -}}
{{- default (printf "%s-secrets" (include "spamscope.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Pod-level settings every component shares. */}}
{{- define "spamscope.podSpec" -}}
serviceAccountName: {{ include "spamscope.serviceAccountName" . }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Container settings every component shares. */}}
{{- define "spamscope.container" -}}
image: {{ include "spamscope.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
securityContext:
  {{- toYaml .Values.securityContext | nindent 2 }}
envFrom:
  - configMapRef:
      name: {{ include "spamscope.fullname" . }}
livenessProbe:
  httpGet:
    path: /healthz
    port: health
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet:
    path: /readyz
    port: health
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}


{{/* Environment items every component shares (a list's items). */}}
{{- define "spamscope.env" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- if .Values.nats.existingSecret }}
- name: SPAMSCOPE_NATS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.nats.existingSecret }}
      key: {{ .Values.nats.existingSecretKey }}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: SPAMSCOPE_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.existingSecretKey }}
{{- end }}
- name: SPAMSCOPE_SHUTDOWN_GRACE_S
  value: {{ .Values.shutdownGraceSeconds | quote }}
{{- if .Values.nats.caSecret }}
- name: SPAMSCOPE_NATS_CA_FILE
  value: {{ printf "/etc/spamscope/nats-ca/%s" .Values.nats.caSecretKey | quote }}
{{- end }}
{{- if .Values.redis.caSecret }}
- name: SPAMSCOPE_REDIS_CA_FILE
  value: {{ printf "/etc/spamscope/redis-ca/%s" .Values.redis.caSecretKey | quote }}
{{- end }}
{{- if .Values.nats.clientCertSecret }}
- name: SPAMSCOPE_NATS_CERT_FILE
  value: /etc/spamscope/nats-client/tls.crt
- name: SPAMSCOPE_NATS_KEY_FILE
  value: /etc/spamscope/nats-client/tls.key
{{- end }}
{{- if .Values.redis.clientCertSecret }}
- name: SPAMSCOPE_REDIS_CERT_FILE
  value: /etc/spamscope/redis-client/tls.crt
- name: SPAMSCOPE_REDIS_KEY_FILE
  value: /etc/spamscope/redis-client/tls.key
{{- end }}
{{- end -}}

{{/* Mounts of the private certificate authorities (a list's items). */}}
{{- define "spamscope.caMounts" -}}
{{- if .Values.nats.caSecret }}
- name: nats-ca
  mountPath: /etc/spamscope/nats-ca
  readOnly: true
{{- end }}
{{- if .Values.redis.caSecret }}
- name: redis-ca
  mountPath: /etc/spamscope/redis-ca
  readOnly: true
{{- end }}
{{- if .Values.nats.clientCertSecret }}
- name: nats-client
  mountPath: /etc/spamscope/nats-client
  readOnly: true
{{- end }}
{{- if .Values.redis.clientCertSecret }}
- name: redis-client
  mountPath: /etc/spamscope/redis-client
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes of the private certificate authorities (a list's items). */}}
{{- define "spamscope.caVolumes" -}}
{{- if .Values.nats.caSecret }}
- name: nats-ca
  secret:
    secretName: {{ .Values.nats.caSecret }}
{{- end }}
{{- if .Values.redis.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.caSecret }}
{{- end }}
{{- if .Values.nats.clientCertSecret }}
- name: nats-client
  secret:
    secretName: {{ .Values.nats.clientCertSecret }}
{{- end }}
{{- if .Values.redis.clientCertSecret }}
- name: redis-client
  secret:
    secretName: {{ .Values.redis.clientCertSecret }}
{{- end }}
{{- end -}}

{{/* The Scylla login of the gateway and the history writer (a list's items). */}}
{{- define "spamscope.historyEnv" -}}
{{- if and (eq .Values.history.backend "scylla") .Values.history.scylla.existingSecret }}
- name: SPAMSCOPE_SCYLLA_USER
  valueFrom:
    secretKeyRef:
      name: {{ .Values.history.scylla.existingSecret }}
      key: scylla-user
- name: SPAMSCOPE_SCYLLA_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.history.scylla.existingSecret }}
      key: scylla-password
{{- end }}
{{- end -}}

{{/* History store flags of the gateway and the history writer. */}}
{{- define "spamscope.historyArgs" -}}
- {{ printf "--history-ttl-days=%v" .Values.history.ttlDays | quote }}
{{- if eq .Values.history.backend "scylla" }}
- {{ printf "--scylla-nodes=%s" (join "," .Values.history.scylla.nodes) | quote }}
- {{ printf "--scylla-keyspace=%s" .Values.history.scylla.keyspace | quote }}
- {{ printf "--scylla-consistency=%s" .Values.history.scylla.consistency | quote }}
- {{ printf "--scylla-replication=%s" .Values.history.scylla.replication | quote }}
{{- else }}
- --history-path=/data/history.redb
{{- end }}
{{- end -}}
