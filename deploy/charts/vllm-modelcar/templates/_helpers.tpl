{{/*
Helpers of the vllm-modelcar chart. Nothing here reads the clock or draws
random numbers: the same values always render the same manifests (the golden
tests in deploy/ rely on it).
*/}}

{{- define "vllm-modelcar.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vllm-modelcar.fullname" -}}
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

{{- define "vllm-modelcar.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object (app.kubernetes.io conventions). */}}
{{- define "vllm-modelcar.labels" -}}
helm.sh/chart: {{ include "vllm-modelcar.chart" . }}
{{ include "vllm-modelcar.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: server
app.kubernetes.io/part-of: modelcar
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The labels the Deployment, Service, PDB and ServiceMonitor select on. */}}
{{- define "vllm-modelcar.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vllm-modelcar.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The model image reference, checked: required, digest-pinned unless allowTag. */}}
{{- define "vllm-modelcar.modelImage" -}}
{{- $ref := required "model.image is required: the modelcar as REPO@sha256:<64 hex>" .Values.model.image }}
{{- if and (not .Values.model.allowTag) (not (regexMatch "@sha256:[a-f0-9]{64}$" $ref)) }}
{{- fail (printf "model.image %q must be pinned by digest (REPO@sha256:<64 hex>), or set model.allowTag=true" $ref) }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* modelcar's own image, checked like the model image. */}}
{{- define "vllm-modelcar.modelcarImage" -}}
{{- $ref := required "modelcar.image is required (modelcar's own image, REPO@sha256:<64 hex>) when warmProbe.enabled or model.delivery=initCopy" .Values.modelcar.image }}
{{- if and (not .Values.modelcar.allowTag) (not (regexMatch "@sha256:[a-f0-9]{64}$" $ref)) }}
{{- fail (printf "modelcar.image %q must be pinned by digest (REPO@sha256:<64 hex>), or set modelcar.allowTag=true" $ref) }}
{{- end }}
{{- $ref }}
{{- end }}

{{/* vLLM's image: REPOSITORY:TAG, or REPOSITORY:TAG@DIGEST when a digest is set. */}}
{{- define "vllm-modelcar.vllmImage" -}}
{{- $i := .Values.vllm.image }}
{{- $ref := $i.repository }}
{{- if $i.tag }}{{ $ref = printf "%s:%s" $ref $i.tag }}{{ end }}
{{- if $i.digest }}{{ $ref = printf "%s@%s" $ref $i.digest }}{{ end }}
{{- $ref }}
{{- end }}

{{/*
initCopy's directory for this model in the cache: sha256-<hex> of the
digest, so a node-local cache holds one directory per model version and
`modelcar pull` finds a complete one stamped and returns at once.
*/}}
{{- define "vllm-modelcar.cacheDir" -}}
{{- $digest := regexFind "sha256:[a-f0-9]{64}$" .Values.model.image }}
{{- if $digest }}
{{- replace ":" "-" $digest }}
{{- else if .Values.model.cache.hostPath }}
{{- fail "model.cache.hostPath needs model.image pinned by digest: a tag can move, and the cache is keyed by digest" }}
{{- else }}
{{- print "model" }}
{{- end }}
{{- end }}

{{/* The model directory vLLM is given (--model). */}}
{{- define "vllm-modelcar.modelPath" -}}
{{- $m := .Values.model }}
{{- $mount := trimSuffix "/" $m.mountPath }}
{{- if eq $m.delivery "imageVolume" }}
{{- printf "%s/%s" $mount (trimPrefix "/" $m.imagePath) }}
{{- else if eq $m.delivery "modelcar" }}
{{- printf "%s/models" $mount }}
{{- else }}
{{- printf "%s/%s" $mount (include "vllm-modelcar.cacheDir" .) }}
{{- end }}
{{- end }}

{{/* The warm-up probe's --timeout: warmProbe.timeout, or the startupProbe budget plus 10 minutes. */}}
{{- define "vllm-modelcar.warmTimeout" -}}
{{- if .Values.warmProbe.timeout }}
{{- .Values.warmProbe.timeout }}
{{- else }}
{{- $p := .Values.vllm.startupProbe }}
{{- printf "%ds" (add (mul $p.periodSeconds $p.failureThreshold) 600) }}
{{- end }}
{{- end }}
