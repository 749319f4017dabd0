{{/*
Names. Object names are capped at 63 characters (DNS label) and never end in a dash.
*/}}
{{- define "tts-stream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "tts-stream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "tts-stream.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Selector labels: the minimal, immutable set. A workload's selector cannot change after
install, so nothing version-like (chart version, image tag) may ever be added here.
*/}}
{{- define "tts-stream.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tts-stream.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "tts-stream.workerSelectorLabels" -}}
{{ include "tts-stream.selectorLabels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "tts-stream.gatewaySelectorLabels" -}}
{{ include "tts-stream.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Labels on every object. */}}
{{- define "tts-stream.labels" -}}
helm.sh/chart: {{ include "tts-stream.chart" . }}
{{ include "tts-stream.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tts-stream
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "tts-stream.workerLabels" -}}
{{ include "tts-stream.labels" . }}
app.kubernetes.io/component: worker
{{- end -}}

{{- define "tts-stream.gatewayLabels" -}}
{{ include "tts-stream.labels" . }}
app.kubernetes.io/component: gateway
{{- end -}}

{{- define "tts-stream.gatewayName" -}}
{{- printf "%s-gateway" (include "tts-stream.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "tts-stream.gatewayImage" -}}
{{- $image := .Values.gateway.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (printf "%s-gateway" .Chart.AppVersion) $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tts-stream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "tts-stream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "tts-stream.image" -}}
{{- $image := .Values.image -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $image.repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $image.repository (default (printf "%s-%s" .Chart.AppVersion $image.variant) $image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "tts-stream.modelClaimName" -}}
{{- default (printf "%s-models" (include "tts-stream.fullname" .)) .Values.model.persistence.existingClaim -}}
{{- end -}}

{{- define "tts-stream.kafkaUsesSasl" -}}
{{- if has .Values.kafka.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "tts-stream.kafkaUsesTls" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end -}}
{{- end -}}

{{- define "tts-stream.kafkaCaDir" -}}/etc/tts-stream/kafka-ca{{- end -}}

{{/*
Connection environment shared by the worker, the topics Job and the model-pull init container:
Kafka (with SASL/TLS from existing Secrets), topic names and the consumer group.
*/}}
{{- define "tts-stream.kafkaEnv" -}}
- name: TTS_KAFKA_BOOTSTRAP_SERVERS
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: TTS_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
{{- if include "tts-stream.kafkaUsesSasl" . }}
- name: TTS_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: TTS_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: TTS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if and (include "tts-stream.kafkaUsesTls" .) .Values.kafka.tls.caSecret }}
- name: TTS_KAFKA_SSL_CA_LOCATION
  value: {{ printf "%s/%s" (include "tts-stream.kafkaCaDir" .) .Values.kafka.tls.caKey | quote }}
{{- end }}
- name: TTS_TOPICS_REQUESTS
  value: {{ .Values.topics.requests | quote }}
- name: TTS_TOPICS_BULK
  value: {{ .Values.topics.bulk | quote }}
- name: TTS_TOPICS_RESULTS
  value: {{ .Values.topics.results | quote }}
- name: TTS_TOPICS_DLQ
  value: {{ .Values.topics.dlq | quote }}
- name: TTS_TOPICS_BACKFILL_CHECKPOINTS
  value: {{ .Values.topics.backfillCheckpoints | quote }}
- name: TTS_TOPICS_DLQ_REPLAYS
  value: {{ .Values.topics.dlqReplays | quote }}
- name: TTS_GROUP_ID
  value: {{ .Values.kafka.groupId | quote }}
- name: TTS_LOG_FORMAT
  value: {{ .Values.worker.logFormat | quote }}
- name: TTS_LOG_LEVEL
  value: {{ .Values.worker.logLevel | quote }}
{{- end -}}

{{/* Redis: the worker's cache and result index; the gateway's rate limits and lookups. */}}
{{- define "tts-stream.redisEnv" -}}
{{- if .Values.redis.existingSecret -}}
- name: TTS_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.redis.existingSecret }}
      key: {{ .Values.redis.urlKey }}
{{- else -}}
- name: TTS_REDIS_URL
  value: {{ .Values.redis.url | quote }}
{{- end }}
{{- with .Values.redis.sentinels }}
- name: TTS_REDIS_SENTINELS
  value: {{ join "," . | quote }}
- name: TTS_REDIS_SENTINEL_MASTER
  value: {{ $.Values.redis.sentinelMaster | quote }}
{{- end }}
{{- with .Values.redis.sentinelPasswordSecret }}
- name: TTS_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.sentinelPasswordKey }}
{{- end }}
{{- with .Values.redis.clusterNodes }}
- name: TTS_REDIS_CLUSTER_NODES
  value: {{ join "," . | quote }}
{{- end -}}
{{- end -}}

{{/* S3 environment: shared by the worker, the gateway and the model-pull init container. */}}
{{- define "tts-stream.s3Env" -}}
{{- with .Values.s3.endpointUrl }}
- name: TTS_S3_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
- name: TTS_S3_REGION
  value: {{ .Values.s3.region | quote }}
{{- if .Values.s3.existingSecret }}
- name: TTS_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: TTS_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- end -}}

{{/* The Kafka CA volume and mount, when a CA Secret is used. */}}
{{- define "tts-stream.kafkaCaVolume" -}}
{{- if and (include "tts-stream.kafkaUsesTls" .) .Values.kafka.tls.caSecret }}
- name: kafka-ca
  secret:
    secretName: {{ .Values.kafka.tls.caSecret }}
    defaultMode: 0444
    items:
      - key: {{ .Values.kafka.tls.caKey }}
        path: {{ .Values.kafka.tls.caKey }}
{{- end }}
{{- end -}}

{{- define "tts-stream.kafkaCaMount" -}}
{{- if and (include "tts-stream.kafkaUsesTls" .) .Values.kafka.tls.caSecret }}
- name: kafka-ca
  mountPath: {{ include "tts-stream.kafkaCaDir" . }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Writable scratch space: the root filesystem is read-only. */}}
{{- define "tts-stream.scratchEnv" -}}
- name: HOME
  value: /tmp
- name: XDG_CACHE_HOME
  value: /tmp/.cache
{{- end -}}

{{/* KEDA's spelling of a SASL mechanism. */}}
{{- define "tts-stream.kedaSasl" -}}
{{- $map := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" -}}
{{- get $map .Values.kafka.sasl.mechanism -}}
{{- end -}}

{{/* PromQL label matchers that select this release's worker series. */}}
{{- define "tts-stream.alertSelector" -}}
{{- if .Values.metrics.prometheusRule.selector -}}
{{- .Values.metrics.prometheusRule.selector -}}
{{- else -}}
{{- printf "namespace=%q,job=%q" .Release.Namespace (include "tts-stream.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* TTS_GATEWAY_OPENAI_VOICES from the map, sorted so renders are stable. */}}
{{- define "tts-stream.openaiVoices" -}}
{{- $pairs := list -}}
{{- range $name, $voice := .Values.gateway.openaiVoices -}}
{{- $pairs = append $pairs (printf "%s=%s" $name $voice) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}

{{/* The StatefulSet's governing Service (headless); only the API needs it. */}}
{{- define "tts-stream.headlessServiceName" -}}
{{- printf "%s-headless" (include "tts-stream.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}
