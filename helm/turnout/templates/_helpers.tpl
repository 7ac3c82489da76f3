{{/* Names and labels shared by every template (the app.kubernetes.io/* conventions). */}}

{{- define "turnout.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: 63 characters at most (a DNS label), without repeating the chart's name. */}}
{{- define "turnout.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "turnout.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object; the selector labels are the stable subset. */}}
{{- define "turnout.labels" -}}
helm.sh/chart: {{ include "turnout.chart" . }}
{{ include "turnout.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: turnout
{{- end }}

{{- define "turnout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "turnout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Each workload adds its component, so that the proxy's selector never matches the bundled Redis. */}}
{{- define "turnout.proxy.selectorLabels" -}}
{{ include "turnout.selectorLabels" . }}
app.kubernetes.io/component: proxy
{{- end }}

{{- define "turnout.redis.fullname" -}}
{{- printf "%s-redis" (include "turnout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "turnout.redis.selectorLabels" -}}
{{ include "turnout.selectorLabels" . }}
app.kubernetes.io/component: redis
{{- end }}

{{- define "turnout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "turnout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the upstream keys come from: the user's, or the chart's own. */}}
{{- define "turnout.keysSecretName" -}}
{{- default (printf "%s-upstream-keys" (include "turnout.fullname" .)) .Values.upstreamKeys.existingSecret }}
{{- end }}

{{- define "turnout.knowledgeClaimName" -}}
{{- default (printf "%s-knowledge" (include "turnout.fullname" .)) .Values.knowledge.existingClaim }}
{{- end }}

{{/* The shutdown budget: the preStop sleep, then the drain, then a margin before the kubelet kills. */}}
{{- define "turnout.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (int (ceil .Values.turnout.drainTimeout)) (int .Values.terminationGraceMarginSeconds) }}
{{- end }}

{{/*
The policy file as mounted. When the chart gives the pods a Redis (TURNOUT_REDIS_URL) and the file has no
top-level `cache:` block of its own, the response cache is pointed at that Redis, so that every replica
shares one cache and its single flight; a file with its own `cache:` block is left as it is.
*/}}
{{- define "turnout.policyFile" -}}
{{- $file := .Values.policy.file -}}
{{- $redis := or .Values.redis.existingSecret .Values.redis.url .Values.redis.bundled.enabled -}}
{{- if and $redis (not (regexMatch "(?m)^cache:" $file)) -}}
{{- printf "%s\n# Added by the chart: the replicas share the Redis it gives them.\ncache: {url: \"${TURNOUT_REDIS_URL}\"}\n" (trimSuffix "\n" $file) -}}
{{- else -}}
{{- $file -}}
{{- end -}}
{{- end }}
