{{/*
HPA behaviour shared by the KEDA-managed HPA and the plain one. GPU pods take minutes to become
useful, so scale-up is damped (a stabilisation window and a pods-per-period limit) and scale-down
is slow (every removal rebalances the consumer group).
*/}}
{{- define "tts-stream.hpaBehavior" -}}
{{- $b := .Values.autoscaling.behavior -}}
scaleUp:
  stabilizationWindowSeconds: {{ $b.scaleUp.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ $b.scaleUp.pods }}
      periodSeconds: {{ $b.scaleUp.periodSeconds }}
scaleDown:
  stabilizationWindowSeconds: {{ $b.scaleDown.stabilizationWindowSeconds }}
  selectPolicy: Max
  policies:
    - type: Pods
      value: {{ $b.scaleDown.pods }}
      periodSeconds: {{ $b.scaleDown.periodSeconds }}
{{- end -}}

{{/* True when the KEDA triggers need a TriggerAuthentication (SASL credentials or a CA). */}}
{{- define "tts-stream.kedaNeedsAuth" -}}
{{- if or (include "tts-stream.kafkaUsesSasl" .) (and (include "tts-stream.kafkaUsesTls" .) .Values.kafka.tls.caSecret) }}true{{ end -}}
{{- end -}}
