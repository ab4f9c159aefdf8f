{{/* Names and labels shared by every object of the release. */}}

{{- define "detour.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "detour.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "detour.labels" -}}
{{ include "detour.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "detour.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "detour.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the controller writes detour-mtls in this cluster (it is a member too). */}}
{{- define "detour.memberNamespace" -}}
{{- default .Release.Namespace .Values.memberNamespace -}}
{{- end -}}

{{/* The controller's certificates, laid out as `detour certs init` writes them. */}}
{{- define "detour.certsDir" -}}/etc/detour/certs{{- end -}}

{{/* Marks the ops Service apart from the table API's (the ServiceMonitor selects it). */}}
{{- define "detour.opsLabel" -}}
app.kubernetes.io/component: ops
{{- end -}}
