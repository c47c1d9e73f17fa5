{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "penguinmails.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "penguinmails.fullname" -}}
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

{{- define "penguinmails.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the operator pod; never change them (Deployment selectors are immutable). */}}
{{- define "penguinmails.selectorLabels" -}}
app.kubernetes.io/name: {{ include "penguinmails.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "penguinmails.labels" -}}
helm.sh/chart: {{ include "penguinmails.chart" . }}
{{ include "penguinmails.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: penguinmails
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "penguinmails.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "penguinmails.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository[:tag][@digest]; a digest wins over the tag. */}}
{{- define "penguinmails.imageRef" -}}
{{- $repository := index . 0 }}
{{- $tag := index . 1 }}
{{- $digest := index . 2 }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{- define "penguinmails.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- include "penguinmails.imageRef" (list .Values.image.repository $tag .Values.image.digest) }}
{{- end }}

{{/* The sender image defaults to the operator's: one image carries both programs. */}}
{{- define "penguinmails.senderImage" -}}
{{- $sender := .Values.sender.image }}
{{- $repository := default .Values.image.repository $sender.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $sender.tag }}
{{- $digest := $sender.digest }}
{{- if and (not $sender.repository) (not $sender.tag) (not $digest) }}
{{- $digest = .Values.image.digest }}
{{- end }}
{{- include "penguinmails.imageRef" (list $repository $tag $digest) }}
{{- end }}

{{/*
The unsubscribe endpoint and the bounce intake: labels of one component, called with
(dict "root" $ "component" "unsubscribe"). Their selectors differ from the operator's by
app.kubernetes.io/component, so no Service selects another program's pods.
*/}}
{{- define "penguinmails.componentSelectorLabels" -}}
app.kubernetes.io/name: {{ include "penguinmails.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "penguinmails.componentLabels" -}}
helm.sh/chart: {{ include "penguinmails.chart" .root }}
{{ include "penguinmails.componentSelectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: penguinmails
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* <fullname>-<component>, within the 63 characters a Service name allows. */}}
{{- define "penguinmails.componentName" -}}
{{- printf "%s-%s" (include "penguinmails.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The environment both components need, called with
(dict "root" $ "component" "unsubscribe" "values" .Values.unsubscribe):
the database URL and the suppression key, from Secrets only. PM_SUPPRESSION_KEY must be the key
the senders sign tokens with, so it always comes from sender.secretName.
*/}}
{{- define "penguinmails.componentSecretEnv" -}}
{{- $sender := required (printf "sender.secretName is required when %s.enabled is true: it holds PM_SUPPRESSION_KEY, which checks the tokens" .component) .root.Values.sender.secretName -}}
- name: PM_DATABASE_URL
  valueFrom:
    secretKeyRef:
{{- if eq .values.databaseUrlFrom "database" }}
      name: {{ .root.Values.database.secretName | quote }}
      key: {{ .root.Values.database.secretKey | quote }}
{{- else }}
      name: {{ $sender | quote }}
      key: PM_DATABASE_URL
{{- end }}
- name: PM_SUPPRESSION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $sender | quote }}
      key: PM_SUPPRESSION_KEY
{{- end }}

{{/* The public base URL of unsubscribe links (the operator's PM_UNSUBSCRIBE_URL); empty: unset. */}}
{{- define "penguinmails.unsubscribeUrl" -}}
{{- $u := .Values.unsubscribe }}
{{- if $u.publicUrl }}
{{- $u.publicUrl }}
{{- else if and $u.enabled $u.ingress.enabled $u.ingress.host }}
{{- printf "https://%s/u" $u.ingress.host }}
{{- end }}
{{- end }}
