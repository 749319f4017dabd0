{{/*
Render-time checks for combinations the schema cannot express. Each message says which values
to change. Included once, from the worker StatefulSet.
*/}}
{{- define "tts-stream.validate" -}}
{{- $v := .Values -}}
{{- $a := $v.autoscaling -}}

{{- if not $v.kafka.bootstrapServers -}}
{{- fail "kafka.bootstrapServers is required: set it to the brokers' comma-separated host:port list" -}}
{{- end -}}

{{- if include "tts-stream.kafkaUsesSasl" . -}}
{{- if or (not $v.kafka.sasl.mechanism) (not $v.kafka.sasl.existingSecret) -}}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.mechanism and kafka.sasl.existingSecret (a Secret with the keys %q and %q)" $v.kafka.securityProtocol $v.kafka.sasl.usernameKey $v.kafka.sasl.passwordKey) -}}
{{- end -}}
{{- else if or $v.kafka.sasl.mechanism $v.kafka.sasl.existingSecret -}}
{{- fail (printf "kafka.sasl is set but kafka.securityProtocol is %s: use SASL_SSL (or SASL_PLAINTEXT), or remove kafka.sasl" $v.kafka.securityProtocol) -}}
{{- end -}}

{{- if and $v.kafka.tls.caSecret (not (include "tts-stream.kafkaUsesTls" .)) -}}
{{- fail (printf "kafka.tls.caSecret is set but kafka.securityProtocol is %s: use SSL or SASL_SSL, or remove kafka.tls.caSecret" $v.kafka.securityProtocol) -}}
{{- end -}}

{{- if not (or $v.redis.existingSecret $v.redis.url) -}}
{{- fail "redis: set redis.existingSecret (a Secret holding the Redis URL, recommended) or redis.url" -}}
{{- end -}}

{{- if and $v.redis.sentinels $v.redis.clusterNodes -}}
{{- fail "redis: set redis.sentinels (Redis with Sentinel) or redis.clusterNodes (Redis Cluster), not both" -}}
{{- end -}}

{{- if $v.gateway.enabled -}}
{{- if not $v.gateway.apiKeys.existingSecret -}}
{{- fail "gateway.apiKeys.existingSecret is required with the gateway: a Secret whose key file lists API key hashes (tts-stream gateway new-key NAME prints a line)" -}}
{{- end -}}
{{- if le (int $v.gateway.terminationGracePeriodSeconds) (int $v.gateway.maxTimeoutSeconds) -}}
{{- fail (printf "gateway.terminationGracePeriodSeconds (%d) must exceed gateway.maxTimeoutSeconds (%d), or a rollout cuts synchronous calls short" (int $v.gateway.terminationGracePeriodSeconds) (int $v.gateway.maxTimeoutSeconds)) -}}
{{- end -}}
{{- if and $v.gateway.ingress.enabled (not $v.gateway.ingress.host) -}}
{{- fail "gateway.ingress.host is required with the gateway's Ingress" -}}
{{- end -}}
{{- end -}}

{{- $grace := int $v.terminationGracePeriodSeconds -}}
{{- $needed := add (int $v.worker.drainTimeoutSeconds) (int $v.worker.drainMarginSeconds) -}}
{{- if lt $grace $needed -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be at least worker.drainTimeoutSeconds (%d) + worker.drainMarginSeconds (%d) = %d, or Kubernetes kills workers mid-drain: raise the grace period or shorten the drain" $grace (int $v.worker.drainTimeoutSeconds) (int $v.worker.drainMarginSeconds) $needed) -}}
{{- end -}}

{{- $partitions := int $v.topics.partitions -}}
{{- if eq $a.mode "none" -}}
{{- if gt (int $v.replicaCount) $partitions -}}
{{- fail (printf "replicaCount (%d) exceeds topics.partitions (%d): the extra workers would hold no partition and idle their GPUs. Lower replicaCount or add partitions (then raise topics.partitions)" (int $v.replicaCount) $partitions) -}}
{{- end -}}
{{- else -}}
{{- if gt (int $a.maxReplicas) $partitions -}}
{{- fail (printf "autoscaling.maxReplicas (%d) exceeds topics.partitions (%d): replicas beyond the partition count get no partition and idle their GPUs. Lower autoscaling.maxReplicas or add partitions to the request topics (then raise topics.partitions)" (int $a.maxReplicas) $partitions) -}}
{{- end -}}
{{- if gt (int $a.minReplicas) (int $a.maxReplicas) -}}
{{- fail (printf "autoscaling.minReplicas (%d) exceeds autoscaling.maxReplicas (%d)" (int $a.minReplicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- end -}}

{{- if eq $a.mode "hpa" -}}
{{- if lt (int $a.minReplicas) 1 -}}
{{- fail "autoscaling.minReplicas 0 (scale-to-zero) needs autoscaling.mode keda: a plain HPA cannot wake a deployment from zero" -}}
{{- end -}}
{{- end -}}

{{- if eq $a.mode "keda" -}}
{{- $lanes := $a.keda.lanes -}}
{{- if not (or $lanes.interactive.enabled $lanes.bulk.enabled) -}}
{{- fail "autoscaling.mode keda needs at least one of autoscaling.keda.lanes.interactive.enabled / bulk.enabled" -}}
{{- end -}}
{{- if and $a.keda.fallback.enabled (gt (int $a.keda.fallback.replicas) (int $a.maxReplicas)) -}}
{{- fail (printf "autoscaling.keda.fallback.replicas (%d) exceeds autoscaling.maxReplicas (%d)" (int $a.keda.fallback.replicas) (int $a.maxReplicas)) -}}
{{- end -}}
{{- /* With `latest` the init costs nothing: a new group skips earlier requests either way, and
the log end it commits at install is earlier than the one a first worker would start from. With
`earliest` it would skip the backlog, so there it stays the operator's explicit choice. */ -}}
{{- if and (eq (int $a.minReplicas) 0) (not $v.topics.job.initGroupOffsets) (eq $v.kafka.offsetResetPolicy "latest") -}}
{{- fail "scale-to-zero with kafka.offsetResetPolicy latest needs topics.job.initGroupOffsets true (and topics.job.enabled): without committed offsets KEDA reports lag 1 per partition and one GPU pod never scales away" -}}
{{- end -}}
{{- if and (eq (int $a.minReplicas) 0) $v.topics.job.initGroupOffsets (not $v.topics.job.enabled) (eq $v.kafka.offsetResetPolicy "latest") -}}
{{- fail "topics.job.initGroupOffsets runs in the topics Job: set topics.job.enabled true, or run `tts-stream topics init-group` yourself and keep minReplicas above 0 until it did" -}}
{{- end -}}
{{- end -}}

{{- if eq $v.worker.engine "cosyvoice" -}}
{{- if not (or $v.model.persistence.enabled $v.model.pull.enabled) -}}
{{- fail "worker.engine cosyvoice needs model files: enable model.persistence (a PVC with the model) and/or model.pull (an init container that fetches it)" -}}
{{- end -}}
{{- end -}}

{{- /* For every engine, not only cosyvoice: a claim nothing fills crash-loops the engines that
read a model, and for espeak or null it is a provisioned ReadWriteMany volume that serves no one. */ -}}
{{- if and $v.model.persistence.enabled (not $v.model.persistence.existingClaim) (not $v.model.pull.enabled) -}}
{{- fail "model.persistence.enabled would create an empty claim that nothing fills (the cosyvoice engine crash-loops on it): set model.pull.enabled true and model.pull.source (a Job fills the claim once), or model.persistence.existingClaim (a claim that already holds the model); engines without model files (espeak, null) set model.persistence.enabled false" -}}
{{- end -}}

{{- if and $v.model.pull.enabled (not (hasPrefix "s3://" $v.model.pull.source)) -}}
{{- fail (printf "model.pull.source must be an s3://bucket/prefix URI, got %q" $v.model.pull.source) -}}
{{- end -}}

{{- if and $v.metrics.serviceMonitor.enabled (not $v.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs service.enabled: the ServiceMonitor scrapes through the Service" -}}
{{- end -}}
{{- end -}}
