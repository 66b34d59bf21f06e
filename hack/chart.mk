# The Helm chart (charts/slm-operator). helm and kubectl are the pinned binaries of the test control plane
# (make cluster-bins), so these targets need no other install; set HELM=helm to use your own.
CHART_DIR ?= charts/slm-operator
HELM ?= $(SLM_CACHE_HOME)/bin/helm-$(shell sed -n 's/^HELM_VERSION=//p' hack/cluster/versions.env)/helm
CHART_KUBE_VERSION ?= $(patsubst v%,%,$(shell sed -n 's/^KUBERNETES_VERSION=//p' hack/cluster/versions.env))
CHART_OUT ?= dist

.PHONY: chart-lint chart-template chart-package chart-test chart-install test-tools

chart-lint: ## helm lint --strict the chart, with defaults and with every toggle on
	$(HELM) lint --strict $(CHART_DIR) --kube-version $(CHART_KUBE_VERSION)
	$(HELM) lint --strict $(CHART_DIR) --kube-version $(CHART_KUBE_VERSION) \
		--set monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true \
		--set monitoring.grafanaDashboard.enabled=true --set 'watchNamespaces={team-a,team-b}' \
		--set gateway.enabled=true,gateway.prefixAffinity.enabled=true,rbac.keda=true

chart-template: ## Render the chart to stdout (add CHART_VALUES=file.yaml)
	@$(HELM) template slm-operator $(CHART_DIR) --namespace slm-system --kube-version $(CHART_KUBE_VERSION) \
		$(if $(CHART_VALUES),--values $(CHART_VALUES))

chart-package: chart-lint ## Package the chart into $(CHART_OUT)/
	$(HELM) package $(CHART_DIR) --destination $(CHART_OUT)

chart-test: install ## Chart, image, read-only-root and monitoring tests (chart ones on the real control plane)
	$(PY) -m pytest tests/unit/chart tests/integration/test_chart.py tests/integration/test_monitoring.py \
		tests/integration/test_readonly_root.py

chart-install: ## helm upgrade --install into $$KUBECONFIG's cluster, namespace slm-system
	$(HELM) upgrade --install slm-operator $(CHART_DIR) --namespace slm-system --create-namespace --wait \
		$(if $(CHART_VALUES),--values $(CHART_VALUES))

test-tools: install ## promtool, prometheus, hadolint, jsonschema, grafana-foundation-sdk (hack/install-test-tools.sh)
	hack/install-test-tools.sh $(VENV)
