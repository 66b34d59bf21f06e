# Local Kubernetes control plane for tests and development (hack/cluster/, tests/cluster/).
# Binaries are built from Go modules into $(SLM_CACHE_HOME)/bin/<component>-<version>/ (versions in
# hack/cluster/versions.env); the running cluster keeps its state, logs and kubeconfig in $(CLUSTER_STATE_DIR).

CLUSTER_STATE_DIR ?= .state/cluster/dev

.PHONY: cluster-bins cluster-up cluster-down cluster-status

cluster-bins: ## Build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok, helm (cached)
	hack/cluster/build-bins.sh

cluster-up: ## Start the local control plane and kwok nodes (builds missing binaries); prints the kubeconfig
	PY=$(PY) hack/cluster/up.sh --state-dir $(CLUSTER_STATE_DIR)

cluster-down: ## Stop the local control plane (add CLUSTER_PURGE=1 to delete its state too)
	PY=$(PY) hack/cluster/down.sh --state-dir $(CLUSTER_STATE_DIR) $(if $(CLUSTER_PURGE),--purge)

cluster-status: ## Show whether the local control plane is running
	PYTHONPATH=tests $(PY) -m cluster status --state-dir $(CLUSTER_STATE_DIR)

