{{/* Names, labels and images shared by every template. */}}

{{- define "slm-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: "<release>-slm-operator", or the release name when it already says slm-operator. */}}
{{- define "slm-operator.fullname" -}}
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

{{- define "slm-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slm-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "slm-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "slm-operator.labels" -}}
helm.sh/chart: {{ include "slm-operator.chart" . }}
{{ include "slm-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: slm-operator
{{- end }}

{{- define "slm-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "slm-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "<registry>/<repository>" or the bare repository when no registry is set. */}}
{{- define "slm-operator.repository" -}}
{{- $registry := trimSuffix "/" .registry }}
{{- if $registry }}{{ printf "%s/%s" $registry .repository }}{{ else }}{{ .repository }}{{ end }}
{{- end }}

{{- define "slm-operator.image" -}}
{{- $repository := include "slm-operator.repository" (dict "registry" .Values.imageRegistry "repository" .Values.image.repository) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "slm-operator.runtimeImage" -}}
{{- $image := .Values.settings.runtimeImage }}
{{- $repository := include "slm-operator.repository" (dict "registry" .Values.imageRegistry "repository" $image.repository) }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion $image.tag) }}
{{- end }}

{{/* The operator settings document (slm_operator.settings.OperatorSettings, camelCase keys). */}}
{{- define "slm-operator.settings" -}}
{{- $settings := omit .Values.settings "runtimeImage" "hardwareProfiles" }}
{{- $_ := set $settings "runtimeImage" (include "slm-operator.runtimeImage" .) }}
{{- if .Values.settings.hardwareProfiles }}
{{- $_ := set $settings "hardwareProfiles" .Values.settings.hardwareProfiles }}
{{- end }}
{{- if and .Values.gateway.enabled (not .Values.settings.gatewayService) }}
{{- $_ := set $settings "gatewayService" (printf "%s/%s" .Release.Namespace (include "slm-operator.gatewayName" .)) }}
{{- end }}
{{- toYaml $settings }}
{{- end }}

{{- /*
What the operator does with each resource, and so the only verbs it gets:
  slmdeployments           list/watch (kopf's watch), get, patch (kopf keeps its progress and
                           last-handled-configuration in annotations)
  slmdeployments/status    get, patch (status is written through the subresource)
  slmdeployments/finalizers update: owner references with blockOwnerDeletion need it where the
                           OwnerReferencesPermissionEnforcement admission plugin is on
  deployments, services, persistentvolumeclaims, horizontalpodautoscalers, poddisruptionbudgets,
  networkpolicies (and servicemonitors, KEDA scaledobjects)
                           get/list/watch (kopf indexes = watch caches), create + patch (server-side apply
                           creates through PATCH, which the apiserver authorises as create too), delete (objects
                           an SLMDeployment no longer wants)
  pods                     get/list/watch only: status and hardware fallback follow the model-server pods
  events                   create: kopf posts Events on SLMDeployments (never reads or updates them)
Nothing else: no Secrets (API keys reach pods through secretKeyRef, which the kubelet resolves), no nodes, no
pods/exec, no RBAC objects, no update/deletecollection.
*/ -}}
{{- define "slm-operator.rules" -}}
- apiGroups: ["slm-operator.io"]
  resources: ["slmdeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["slm-operator.io"]
  resources: ["slmdeployments/status"]
  verbs: ["get", "patch"]
- apiGroups: ["slm-operator.io"]
  resources: ["slmdeployments/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["services", "persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- if .Values.rbac.serviceMonitors }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
{{- if .Values.rbac.keda }}
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
{{- end }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/* The name of the leader-election Lease; fixed in the operator (slm_operator.controller.handlers). */}}
{{- define "slm-operator.leaseName" -}}slm-operator-leader{{- end }}

{{/* slm-gateway: its name (Deployment, Service, ServiceAccount, RBAC), labels and the namespaces it serves. */}}
{{- define "slm-operator.gatewayName" -}}
{{- printf "%s-gateway" (include "slm-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "slm-operator.gatewaySelectorLabels" -}}
{{ include "slm-operator.selectorLabels" . }}
app.kubernetes.io/component: gateway
{{- end }}

{{/* gateway.namespaces, else watchNamespaces, as JSON (empty list: every namespace). */}}
{{- define "slm-operator.gatewayNamespaces" -}}
{{- toJson (default .Values.watchNamespaces .Values.gateway.namespaces) }}
{{- end }}

{{- /*
What the gateway does with each resource, and so the only verbs it gets:
  slmdeployments           get/list/watch: the catalog of models (served name, phase, scale to zero)
  endpointslices           get/list/watch: the ready pods of each model's Service
  deployments/scale        get, patch (wake.mode direct): a JSON patch from exactly 0 to 1 replicas
  scaledobjects (keda.sh)  get, patch (wake.mode direct): KEDA's force-activation annotation while it holds or
                           answers requests for a model at zero
Nothing else: no Secrets (its keys file is a mounted volume), no pods, no writes to SLMDeployments.
*/ -}}
{{- define "slm-operator.gatewayRules" -}}
- apiGroups: ["slm-operator.io"]
  resources: ["slmdeployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- if eq .Values.gateway.wake.mode "direct" }}
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["get", "patch"]
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
