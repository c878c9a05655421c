{{/* The release name (or fullnameOverride) names every resource: the DAG derives the Service URL from it. */}}
{{- define "pis.fullname" -}}
{{- default .Release.Name .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pis.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pis.labels" -}}
{{ include "pis.selectorLabels" . }}
app.kubernetes.io/version: {{ include "pis.tag" . | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: patientinsight
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "pis.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag -}}
{{- end -}}

{{- define "pis.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ include "pis.tag" . }}
{{- end -}}
{{- end -}}

{{- define "pis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pis.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The port of the rate limit's Redis: rateLimit.redisPort, else the port of rateLimit.storage (6379 when it
names none); empty when the limit is per pod. */}}
{{- define "pis.redisPort" -}}
{{- if .Values.rateLimit.redisPort -}}
{{ .Values.rateLimit.redisPort }}
{{- else if .Values.rateLimit.storage -}}
{{ (urlParse .Values.rateLimit.storage).host | regexFind ":[0-9]+$" | trimPrefix ":" | default "6379" }}
{{- end -}}
{{- end -}}
