# The operator on the local control plane.

.PHONY: operator-run cluster-demo cluster-demo-down

operator-run: install ## Run the operator against $$KUBECONFIG (foreground)
	$(SLM) operator run

cluster-demo: install ## Control plane + kwok nodes + CRD + operator + examples, then `kubectl get slm -o wide`
	PY=$(PY) CLUSTER_STATE_DIR=$(CLUSTER_STATE_DIR) hack/demo.sh

cluster-demo-down: ## Stop the demo's operator and control plane
	-@[ -f $(CLUSTER_STATE_DIR)/operator.pid ] && kill $$(cat $(CLUSTER_STATE_DIR)/operator.pid) 2>/dev/null; rm -f $(CLUSTER_STATE_DIR)/operator.pid
	$(MAKE) cluster-down
