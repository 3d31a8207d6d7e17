{{/*
The chart name: the app.kubernetes.io/name label, and the job label of a
ServiceMonitor's targets (the shipped alerts select job="iamlet").
*/}}
{{- define "iamlet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The name of every object: the release name when it contains the chart
name (release "iamlet" gives "iamlet", as in the kustomize base).
*/}}
{{- define "iamlet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "iamlet.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* What the pods are selected by: fixed for the life of a release. */}}
{{- define "iamlet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iamlet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "iamlet.labels" -}}
{{ include "iamlet.selectorLabels" . }}
app.kubernetes.io/part-of: iamlet
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "iamlet.chart" . }}
{{- end -}}

{{/*
The ServiceAccount the agent runs as. kube2iam's chart, with
rbac.create=false, created none and ran as rbac.serviceAccountName
("default" unless set); a values file that says so keeps that meaning
unless it names serviceAccount.name.
*/}}
{{- define "iamlet.kube2iamServiceAccount" -}}
{{- if and (not .Values.rbac.create) (not .Values.serviceAccount.name) -}}
{{- .Values.rbac.serviceAccountName | default "default" -}}
{{- end -}}
{{- end -}}

{{- define "iamlet.serviceAccountName" -}}
{{- include "iamlet.kube2iamServiceAccount" . | default .Values.serviceAccount.name | default (include "iamlet.fullname" .) -}}
{{- end -}}

{{- define "iamlet.createServiceAccount" -}}
{{- if and .Values.serviceAccount.create (not (include "iamlet.kube2iamServiceAccount" .)) -}}
true
{{- end -}}
{{- end -}}

{{/* The port metrics are served on: prometheus.metricsPort, else host.port. */}}
{{- define "iamlet.metricsPort" -}}
{{- .Values.prometheus.metricsPort | default .Values.host.port | int -}}
{{- end -}}

{{- define "iamlet.separateMetricsPort" -}}
{{- if ne (include "iamlet.metricsPort" . | int) (.Values.host.port | int) -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret with static AWS keys: existingSecret, or the chart's own. */}}
{{- define "iamlet.awsSecret" -}}
{{- if .Values.existingSecret -}}
{{- .Values.existingSecret -}}
{{- else if and .Values.aws.access_key .Values.aws.secret_key -}}
{{- include "iamlet.fullname" . -}}
{{- end -}}
{{- end -}}

{{/*
Values iamlet cannot run with, refused at render time with the value to
change, rather than by the agent at start on every node.
*/}}
{{- define "iamlet.checks" -}}
{{- if and .Values.host.iptables (not .Values.host.interface) -}}
{{- fail "host.iptables=true needs host.interface: the pod-side interfaces of your CNI (eni+ for the AWS VPC CNI, cali+ for Calico, lxc+ for Cilium, docker0 for the docker bridge)" -}}
{{- end -}}
{{- if eq (base .Values.image.repository) "kube2iam" -}}
{{- fail (printf "image.repository is kube2iam's image (%s): set image.repository and image.tag to your iamlet image (docs/installation.md)" .Values.image.repository) -}}
{{- end -}}
{{- range $flag := list "app-port" "metrics-port" -}}
{{- if hasKey $.Values.extraArgs $flag -}}
{{- fail (printf "extraArgs.%s: set host.port (the app port) and prometheus.metricsPort instead, so that the container port, probes and Service follow" $flag) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.cgroupRoot -}}
{{- fail "cgroupRoot must name the host's cgroup v2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid nodes)" -}}
{{- end -}}
{{- end -}}

{{/*
The agent's arguments: first those of the kustomize base, in its order,
then iamlet's own options, then extraArgs (the last of a repeated flag
wins, as with kube2iam's Go flags).
*/}}
{{- define "iamlet.args" -}}
- {{ printf "--iptables=%v" .Values.host.iptables | quote }}
{{- if .Values.host.interface }}
- {{ printf "--host-interface=%v" .Values.host.interface | quote }}
{{- end }}
{{- if .Values.host.ip }}
- {{ printf "--host-ip=%v" .Values.host.ip | quote }}
{{- end }}
- "--node=$(NODE_NAME)"
- {{ printf "--app-port=%d" (.Values.host.port | int) | quote }}
{{- if or (include "iamlet.separateMetricsPort" .) (ne (.Values.host.port | int) 8181) }}
{{- /* iamlet's --metrics-port defaults to 8181: follow the app port. */}}
- {{ printf "--metrics-port=%s" (include "iamlet.metricsPort" .) | quote }}
{{- end }}
- {{ printf "--log-format=%v" .Values.logFormat | quote }}
{{- with .Values.imdsTokenKeyFile }}
- {{ printf "--imds-token-key-file=%v" . | quote }}
{{- end }}
{{- if .Values.verbose }}
- "--verbose"
{{- end }}
{{- with .Values.containerCredentials }}
{{- if not .enabled }}
- "--container-credentials=false"
{{- end }}
{{- with .listen }}
- {{ printf "--container-credentials-listen=%v" . | quote }}
{{- end }}
{{- with .audience }}
- {{ printf "--container-credentials-audience=%v" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.serviceAccountRoles }}
{{- if .enabled }}
- "--service-account-roles=true"
{{- end }}
{{- with .annotation }}
- {{ printf "--service-account-role-key=%v" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.sessionTags }}
{{- if .enabled }}
- "--session-tags=true"
{{- end }}
{{- with .clusterName }}
- {{ printf "--cluster-name=%v" . | quote }}
{{- end }}
{{- with .clusterArn }}
- {{ printf "--cluster-arn=%v" . | quote }}
{{- end }}
{{- if .sourceIdentity }}
- "--session-source-identity=true"
{{- end }}
{{- end }}
{{- if ne .Values.startupTaint "iamlet.io/agent-not-ready:NoSchedule" }}
- {{ printf "--startup-taint=%v" .Values.startupTaint | quote }}
{{- end }}
{{- with .Values.podEvents }}
{{- if not .enabled }}
- "--pod-events=false"
{{- end }}
{{- with .interval }}
- {{ printf "--pod-event-interval=%v" . | quote }}
{{- end }}
{{- end }}
{{- with .Values.namespaceRestrictions }}
{{- if .enabled }}
- "--namespace-restrictions=true"
{{- end }}
{{- with .format }}
- {{ printf "--namespace-restriction-format=%v" . | quote }}
{{- end }}
{{- end }}
{{- range $flag, $value := .Values.extraArgs }}
{{- if or (kindIs "invalid" $value) (eq (toString $value) "") }}
- {{ printf "--%s" $flag | quote }}
{{- else }}
- {{ printf "--%s=%v" $flag $value | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One probe: kube2iam's timing keys, each rendered when set. */}}
{{- define "iamlet.probe" -}}
{{- $probe := index . 0 -}}
{{- $path := index . 1 -}}
{{- $port := index . 2 -}}
httpGet:
  path: {{ $path }}
  port: {{ $port }}
{{- range $key := list "initialDelaySeconds" "periodSeconds" "successThreshold" "failureThreshold" "timeoutSeconds" }}
{{- with index $probe $key }}
{{ $key }}: {{ . | int }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The tolerations: the values' own, and the startup taint's unless they
already tolerate every taint (an agent that cannot land on a tainted node
can never untaint it). */}}
{{- define "iamlet.tolerations" -}}
{{- $tolerations := .Values.tolerations | default list -}}
{{- $all := false -}}
{{- range $tolerations }}
{{- if and (eq (toString .operator) "Exists") (not .key) (not .effect) }}
{{- $all = true -}}
{{- end }}
{{- end }}
{{- with .Values.startupTaint }}
{{- if not $all }}
{{- $effect := regexReplaceAll "^.*:" . "" -}}
{{- $key := regexReplaceAll "[=:].*$" . "" -}}
{{- $tolerations = append $tolerations (dict "key" $key "operator" "Exists" "effect" $effect) -}}
{{- end }}
{{- end }}
{{- with $tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
