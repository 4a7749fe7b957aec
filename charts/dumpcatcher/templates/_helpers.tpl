{{/* Chart name, at most 63 characters. */}}
{{- define "dumpcatcher.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: fullnameOverride, else the release name
when it already contains the chart name, else release-chart.
*/}}
{{- define "dumpcatcher.fullname" -}}
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

{{- define "dumpcatcher.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "dumpcatcher.labels" -}}
helm.sh/chart: {{ include "dumpcatcher.chart" . }}
{{ include "dumpcatcher.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dumpcatcher
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the webhook pods. */}}
{{- define "dumpcatcher.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dumpcatcher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: webhook
{{- end }}

{{- define "dumpcatcher.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dumpcatcher.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: name an existing ServiceAccount when serviceAccount.create=false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image REPOSITORY TAG DIGEST DEFAULT-TAG: repository@digest or repository:tag. */}}
{{- define "dumpcatcher.image" -}}
{{- $repository := index . 0 }}{{ $tag := index . 1 }}{{ $digest := index . 2 }}{{ $default := index . 3 }}
{{- if $digest }}
{{- printf "%s@%s" $repository $digest }}
{{- else }}
{{- printf "%s:%s" $repository (default $default $tag) }}
{{- end }}
{{- end }}

{{- define "dumpcatcher.webhookImage" -}}
{{- include "dumpcatcher.image" (list .Values.image.repository .Values.image.tag .Values.image.digest .Chart.AppVersion) }}
{{- end }}

{{- define "dumpcatcher.sidecarImage" -}}
{{- $i := .Values.config.sidecar.image }}
{{- include "dumpcatcher.image" (list $i.repository $i.tag $i.digest .Chart.AppVersion) }}
{{- end }}

{{/* The Secret with the webhook's serving certificate. */}}
{{- define "dumpcatcher.tlsSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-tls" (include "dumpcatcher.fullname" .) }}
{{- else }}
{{- required "tls.secretName: with certManager.enabled=false, name an existing Secret with tls.crt and tls.key for the webhook Service (see the chart README)" .Values.tls.secretName }}
{{- end }}
{{- end }}

{{/* Namespaces the webhook never sees, as a YAML list. */}}
{{- define "dumpcatcher.excludedNamespaces" -}}
{{- toYaml (uniq (concat (list .Release.Namespace "kube-system") .Values.webhook.excludedNamespaces)) }}
{{- end }}

{{/* The webhook configuration file (config.yaml of the ConfigMap). */}}
{{- define "dumpcatcher.config" -}}
{{- $c := .Values.config }}
{{- $sidecar := dict "image" (include "dumpcatcher.sidecarImage" .) "imagePullPolicy" $c.sidecar.imagePullPolicy "resources" $c.sidecar.resources }}
{{- $cfg := dict "destination" $c.destination "credentialsSecret" $c.credentialsSecret "mountPath" $c.mountPath "sizeLimit" $c.sizeLimit "preStop" $c.preStop "minTerminationGracePeriodSeconds" $c.minTerminationGracePeriodSeconds "nativeSidecar" $c.nativeSidecar "excludedNamespaces" .Values.webhook.excludedNamespaces "sidecar" $sidecar "upload" $c.upload }}
{{- toYaml $cfg }}
{{- end }}
