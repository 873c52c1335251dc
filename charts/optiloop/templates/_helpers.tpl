{{/* Full name of the release's objects. */}}
{{- define "optiloop.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "optiloop.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Labels that select the operator pods. */}}
{{- define "optiloop.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "optiloop.serviceAccountName" -}}
{{- default (include "optiloop.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* Fails the render on settings that cannot work together. */}}
{{- define "optiloop.validate" -}}
{{- if not (has .Values.watch.mode (list "cluster" "namespaced")) -}}
{{- fail (printf "watch.mode must be \"cluster\" or \"namespaced\", not %q" .Values.watch.mode) -}}
{{- end -}}
{{- if and (eq .Values.watch.mode "namespaced") (not .Values.watch.namespaces) -}}
{{- fail "watch.mode=namespaced needs at least one namespace in watch.namespaces" -}}
{{- end -}}
{{- if and (eq .Values.watch.mode "namespaced") .Values.rbac.jobPodsNamespaces -}}
{{- fail "rbac.jobPodsNamespaces applies to cluster mode; namespaced mode lists pods only in watch.namespaces" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}
{{- fail "enable either metrics.serviceMonitor or metrics.podMonitor, not both (Prometheus would scrape twice)" -}}
{{- end -}}
{{- end -}}

{{/*
The permissions, in three parts. "framework": what Kopf itself needs (peering, Events,
resource discovery). "application": what optiloop's reconcile does (our resource and its
status, the Jobs, InferenceServices, the drift monitor's Deployment and Service, Events).
"jobPods": listing the pods of its Jobs, apart so that cluster mode can grant it only in the
namespaces of rbac.jobPodsNamespaces. tests/chart/ checks these against the verbs the
operator really uses on a real API server.
*/}}
{{- define "optiloop.rules.framework" -}}
# Kopf peering: one active replica, the others on standby.
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
# Kopf posts Events for handler failures; the operator posts its own on every transition.
# (core v1 Events only: neither Kopf nor optiloop posts events.k8s.io ones).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "optiloop.rules.application" -}}
# The ModelOptimization resource: watched, annotated and finalized by Kopf, status by optiloop.
- apiGroups: ["optiloop.dev"]
  resources: ["modeloptimizations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["optiloop.dev"]
  resources: ["modeloptimizations/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion, which needs this where the
# OwnerReferencesPermissionEnforcement admission plugin runs.
- apiGroups: ["optiloop.dev"]
  resources: ["modeloptimizations/finalizers"]
  verbs: ["update"]
# The tuning and compression Jobs; superseded ones are deleted.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "delete"]
# The InferenceServices serving the model (one per revision in KServe's Standard mode; one
# whose traffic has moved to another revision is deleted).
- apiGroups: ["serving.kserve.io"]
  resources: ["inferenceservices"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# The HTTPRoute that splits a canary's traffic in Standard mode.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "update", "delete"]
# The drift monitor.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "create", "update", "delete"]
# The drift monitor's NetworkPolicy (only its InferenceServices' pods and Prometheus reach it).
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["get", "create", "update", "delete"]
{{- end -}}


{{- define "optiloop.rules.jobPods" -}}
# Read-only, list only: a finished Job's pods carry the stage outcome in their termination
# message. The operator lists them by the Job's label in the resource's own namespace, never
# across namespaces and never one by name.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end -}}
