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

{{/* Name of the dumps API's objects: the full name, cut to leave room, plus -api. */}}
{{- define "dumpcatcher.apiName" -}}
{{- printf "%s-api" (include "dumpcatcher.fullname" . | trunc 59 | trimSuffix "-") }}
{{- end }}

{{/* Labels that select the dumps API pods. */}}
{{- define "dumpcatcher.apiSelectorLabels" -}}
app.kubernetes.io/name: {{ include "dumpcatcher.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: api
{{- end }}

{{/* Labels of the dumps API's objects. */}}
{{- define "dumpcatcher.apiLabels" -}}
helm.sh/chart: {{ include "dumpcatcher.chart" . }}
{{ include "dumpcatcher.apiSelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dumpcatcher
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "dumpcatcher.apiServiceAccountName" -}}
{{- if .Values.api.serviceAccount.create }}
{{- default (include "dumpcatcher.apiName" .) .Values.api.serviceAccount.name }}
{{- else }}
{{- required "api.serviceAccount.name: name an existing ServiceAccount when api.serviceAccount.create=false" .Values.api.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the dumps API's serving certificate. */}}
{{- define "dumpcatcher.apiTLSSecretName" -}}
{{- if .Values.certManager.enabled }}
{{- printf "%s-tls" (include "dumpcatcher.apiName" .) }}
{{- else }}
{{- required "api.tls.secretName: with certManager.enabled=false and api.enabled=true, name an existing Secret with tls.crt and tls.key for the API's Service <fullname>-api.<namespace>.svc (see the chart README)" .Values.api.tls.secretName }}
{{- end }}
{{- end }}

{{/* Where the API server reads its configuration, serving certificate and store credentials. */}}
{{- define "dumpcatcher.apiConfigDir" -}}/etc/dumpcatcher-api{{- end }}

{{/*
The destinations the dumps API serves, as a YAML list of
{name, url, credentialsSecret}: config.destination named "default" with
api.credentialsSecret, then api.destinations (credentialsSecret defaulting
to api.credentialsSecret). Fails on a duplicate name and on an empty list.
*/}}
{{- define "dumpcatcher.apiDestinations" -}}
{{- $api := .Values.api }}
{{- $dests := list }}
{{- $seen := dict }}
{{- if .Values.config.destination }}
{{- $dests = append $dests (dict "name" "default" "url" .Values.config.destination "credentialsSecret" $api.credentialsSecret) }}
{{- $_ := set $seen "default" true }}
{{- end }}
{{- range $i, $d := $api.destinations }}
{{- if hasKey $seen $d.name }}
{{- fail (printf "api.destinations[%d].name: %q is taken (config.destination is named \"default\"); give each destination its own name" $i $d.name) }}
{{- end }}
{{- $_ := set $seen $d.name true }}
{{- $dests = append $dests (dict "name" $d.name "url" $d.url "credentialsSecret" (default $api.credentialsSecret $d.credentialsSecret)) }}
{{- end }}
{{- if not $dests }}
{{- fail "api.enabled: the API has no destination to list; set config.destination or add api.destinations" }}
{{- end }}
{{- toYaml $dests }}
{{- end }}

{{/* The Secrets the API server mounts: the credentials of its s3:// destinations, sorted, as a YAML list. */}}
{{- define "dumpcatcher.apiCredentialSecrets" -}}
{{- $secrets := list }}
{{- range include "dumpcatcher.apiDestinations" . | fromYamlArray }}
{{- if and .credentialsSecret (hasPrefix "s3://" .url) }}
{{- $secrets = append $secrets .credentialsSecret }}
{{- end }}
{{- end }}
{{- toYaml ($secrets | uniq | sortAlpha) }}
{{- end }}

{{/* The dumps API's configuration file (config.yaml of its ConfigMap, the server's --config). */}}
{{- define "dumpcatcher.apiConfig" -}}
{{- $dir := include "dumpcatcher.apiConfigDir" . }}
{{- $dests := list }}
{{- range include "dumpcatcher.apiDestinations" . | fromYamlArray }}
{{- $d := dict "name" .name "url" .url }}
{{- if and .credentialsSecret (hasPrefix "s3://" .url) }}
{{- $_ := set $d "credentialsDir" (printf "%s/credentials/%s" $dir .credentialsSecret) }}
{{- end }}
{{- $dests = append $dests $d }}
{{- end }}
{{- toYaml (dict "destinations" $dests "presign" .Values.api.presign) }}
{{- end }}
