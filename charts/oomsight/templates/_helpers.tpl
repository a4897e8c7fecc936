{{/* Names and labels shared by every template. */}}

{{- define "oomsight.fullname" -}}
{{- if contains "oomsight" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-oomsight" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "oomsight.labels" -}}
app.kubernetes.io/name: oomsight
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Selector labels of one component: include "oomsight.selectorLabels" (list . "agent") */}}
{{- define "oomsight.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: oomsight
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "oomsight.agent.serviceAccountName" -}}
{{- default (printf "%s-agent" (include "oomsight.fullname" .)) .Values.agent.serviceAccount.name -}}
{{- end -}}

{{- define "oomsight.operator.serviceAccountName" -}}
{{- default (printf "%s-operator" (include "oomsight.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "oomsight.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "oomsight.pullSecrets" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end -}}
