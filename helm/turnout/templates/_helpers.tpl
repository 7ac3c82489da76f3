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

{{/* The shutdown budget: the preStop sleep, then the drain (requests get drainTimeout, then the background
work they left, cache writes, shadow copies and spend, gets up to as long again), then a margin before the kubelet kills. */}}
{{- define "turnout.terminationGracePeriodSeconds" -}}
{{- add (int .Values.preStopSleepSeconds) (mul 2 (int (ceil .Values.turnout.drainTimeout))) (int .Values.terminationGraceMarginSeconds) }}
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

{{/* `keys` or `off`: a values file's bare `off` is YAML's false, and means off too. */}}
{{- define "turnout.authMode" -}}
{{- if eq (toString .Values.auth.mode) "keys" }}keys{{ else }}off{{ end }}
{{- end }}

{{/* "true" when the pods get a database URL (the keys and the ledger then live there, shared by the replicas). */}}
{{- define "turnout.hasDatabase" -}}
{{- if or .Values.database.existingSecret .Values.database.url }}true{{ end }}
{{- end }}

{{/* "true" when the pods get an admin key (the admin HTTP API is off without one). */}}
{{- define "turnout.hasAdminKey" -}}
{{- if or .Values.auth.adminKey.existingSecret .Values.auth.adminKey.value }}true{{ end }}
{{- end }}

{{/* The chart's own Secret for the admin key and the database URL given as values (only those). */}}
{{- define "turnout.authSecretName" -}}
{{- printf "%s-auth" (include "turnout.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "turnout.authSecretNeeded" -}}
{{- if or (and .Values.auth.adminKey.value (not .Values.auth.adminKey.existingSecret)) (and .Values.database.url (not .Values.database.existingSecret)) }}true{{ end }}
{{- end }}

{{/* Where the SQLite file lives when no database is set: an emptyDir, the root filesystem being read-only. */}}
{{- define "turnout.dataDir" -}}/var/lib/turnout/data{{- end }}

{{/*
More than one pod with keys but no shared database would give each pod its own SQLite file: a key made in
one pod would be refused by the others, a revoked one still let in, and every budget counted per pod. The
chart refuses to render that rather than deploy it.
*/}}
{{- define "turnout.checkAuth" -}}
{{- $many := ternary (gt (int .Values.autoscaling.maxReplicas) 1) (gt (int .Values.replicaCount) 1) .Values.autoscaling.enabled }}
{{- if and (eq (include "turnout.authMode" .) "keys") (not (include "turnout.hasDatabase" .)) $many }}
{{- $pods := ternary (printf "the up to %d replicas (autoscaling.maxReplicas)" (int .Values.autoscaling.maxReplicas)) (printf "the %d replicas (replicaCount)" (int .Values.replicaCount)) .Values.autoscaling.enabled }}
{{- fail (printf "auth.mode is keys and no database is set: %s would each keep their keys in an SQLite file of their own, so a key made in one pod would be refused by the others. Give them one PostgreSQL with database.existingSecret (a Secret holding its URL) or database.url; or run one replica (replicaCount=1; its keys are lost when the pod is replaced); or set auth.mode=off." $pods) }}
{{- end }}
{{- end }}

{{/* Where the knowledge build reads the documents: beside the index directory, so the index names them
"documents/<file>" (sources are named relative to the index directory's parent). */}}
{{- define "turnout.documentsDir" -}}{{ printf "%s/documents" (dir .Values.knowledge.mountPath) }}{{- end }}

{{/* The volume holding the documents the knowledge build indexes: the chart's ConfigMap, a named one, or any volume. */}}
{{- define "turnout.documentsVolume" -}}
{{- $build := .Values.knowledge.build -}}
{{- if $build.source -}}
{{ toYaml $build.source }}
{{- else -}}
configMap: {name: {{ $build.configMap | default (printf "%s-documents" (include "turnout.fullname" .)) }}}
{{- end -}}
{{- end }}
