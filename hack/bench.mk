# Benchmarks (bench/): our runtime against llama-cpp-python and llama.cpp's llama-server, prompt reuse on against off,
# the numpy sampler against llama.cpp's chain, the runtime under overload, the ONNX engine against onnxruntime-genai's
# own loop and og.Engine, the gateway against the runtime reached directly, the operator at scale, the runtime in a
# pod on the real node; bench/report.py turns .state/bench/*.json into docs/benchmarks.md and docs/benchmarks/*.png
# (`bench/report.py --only NAME` rewrites one section from its own result). On 2 cores `make bench` takes about
# 1.5 hours with llama-server cached (runtime part ~30 min, of which the 1-16 client sweep ~10 and prompt reuse ~8;
# gateway ~5, operator ~40, real node ~6, scale to zero ~10, constrained decoding ~6; the first llama-server build
# adds 8-13); fewer runs: `make bench BENCH_RUNS=3 BENCH_SWEEP_RUNS=2 BENCH_GATEWAY_RUNS=3`. On a shared machine
# the scripts wait up to BENCH_SETTLE seconds for quiet before each run and redo runs that other work disturbed (see
# bench/benchlib.py).
BENCH_STATE ?= .state/bench
BENCH_RUNS ?= 7
BENCH_SWEEP_RUNS ?= 3
BENCH_GATEWAY_RUNS ?= 5
BENCH_TOKENS ?= 64
BENCH_THREADS ?= 2
BENCH_CONTEXT ?= 2048
BENCH_PARALLEL ?= 8
BENCH_SETTLE ?= 5
BENCH_STEADY ?= 20
BENCH_REAL_NODE_ROUNDS ?= 3
BENCH_COMMON = --tokens $(BENCH_TOKENS) --context-length $(BENCH_CONTEXT) --settle $(BENCH_SETTLE)

.PHONY: bench bench-runtime bench-gateway bench-operator bench-real-node bench-report llama-server

llama-server: install ## Build llama.cpp's llama-server (the benchmarks' baseline) once into the cache
	hack/build-llama-server.sh $(PY)

bench: install ## Every benchmark (runtime vs llama-cpp-python/llama-server, ONNX, gateway, operator, constrained decoding) -> docs/benchmarks.md
	rm -f $(BENCH_STATE)/*.json $(BENCH_STATE)/pull_throughput.log
	$(MAKE) --no-print-directory bench-runtime
	$(MAKE) --no-print-directory bench-gateway
	$(MAKE) --no-print-directory bench-operator
	$(MAKE) --no-print-directory bench-real-node
	$(MAKE) --no-print-directory bench-scale-to-zero
	$(MAKE) --no-print-directory bench-constrained
	$(MAKE) --no-print-directory bench-report

bench-runtime: install ## Runtime: single stream, 1-16 clients, slot gaps, prompt reuse, sampling, overload, ONNX (~30 min)
	@mkdir -p $(BENCH_STATE)
	hack/build-llama-server.sh $(PY) || echo ">> llama-server could not be built: the sweep skips it"
	$(PY) bench/single_stream.py --runs $(BENCH_RUNS) --threads $(BENCH_THREADS) $(BENCH_COMMON) \
		--out $(BENCH_STATE)/single_stream.json
	$(PY) bench/concurrency.py --runs $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) --parallel $(BENCH_PARALLEL) \
		$(BENCH_COMMON) --out $(BENCH_STATE)/concurrency.json
	$(PY) bench/slot_gaps.py --runs $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) $(BENCH_COMMON) \
		--out $(BENCH_STATE)/slot_gaps.json
	$(PY) bench/prompt_reuse.py --runs $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) $(BENCH_COMMON) \
		--out $(BENCH_STATE)/prompt_reuse.json
	$(PY) bench/sampling_cost.py --runs $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) --settle $(BENCH_SETTLE) \
		--out $(BENCH_STATE)/sampling_cost.json
	$(PY) bench/overload.py --rounds $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) --parallel $(BENCH_PARALLEL) \
		$(BENCH_COMMON) --out $(BENCH_STATE)/overload.json
	$(PY) bench/onnx_engine.py --runs $(BENCH_RUNS) $(BENCH_COMMON) --out $(BENCH_STATE)/onnx_engine.json
	set -o pipefail; $(PY) bench/pull_throughput.py --size-mib 256 --rounds 2 2>&1 | tee $(BENCH_STATE)/pull_throughput.log

# The runtime gets one thread of the two cores here: in a cluster the gateway runs in its own pod with its own CPU,
# and with both cores given to llama.cpp the figure measures CPU contention (see docs/gateway.md, "Overhead").
BENCH_GATEWAY_THREADS ?= 1
bench-gateway: install ## Gateway overhead: the runtime through slm-gateway vs reached directly, 1 and 8 clients (~5 min)
	@mkdir -p $(BENCH_STATE)
	$(PY) bench/gateway.py --runs $(BENCH_GATEWAY_RUNS) --threads $(BENCH_GATEWAY_THREADS) --parallel $(BENCH_PARALLEL) \
		$(BENCH_COMMON) --out $(BENCH_STATE)/gateway.json

# Operator at scale against the bare-client baseline, with the controller-manager's and scheduler's client rate limits
# at Kubernetes' defaults and raised (one control plane each); fewer: BENCH_OPERATOR_COUNTS="1 10 100".
BENCH_OPERATOR_COUNTS ?= 1 10 100 500 1000
BENCH_OPERATOR_LIMITS ?= default raised
bench-operator: install ## Operator scale vs a bare client, default and raised platform limits (~40 min on 2 cores)
	@mkdir -p $(BENCH_STATE)
	$(PY) bench/operator_scale.py --counts $(BENCH_OPERATOR_COUNTS) --limits $(BENCH_OPERATOR_LIMITS) \
		--steady-seconds $(BENCH_STEADY) --out $(BENCH_STATE)/operator_scale.json

# The real node needs root and Debian's containerd, runc, containernetworking-plugins and iptables
# (docs/real-node.md), and the images (hack/images/build.sh, warm: seconds); without them the report says "not run".
bench-real-node: install ## Runtime in a pod on the real node vs on the host; kubectl apply -> first answer (~6 min)
	@mkdir -p $(BENCH_STATE)
	@missing=$$(PYTHONPATH=tests $(PY) -c 'from cluster.realnode import missing_packages; \
		print(" ".join(sorted(set(missing_packages().values()))))'); \
	if [ "$$(id -u)" != 0 ] || [ -n "$$missing" ]; then \
		echo ">> bench-real-node needs root and these Debian packages: $${missing:-none missing}; not run"; \
	else \
		echo "$(PY) bench/real_node.py --runs $(BENCH_RUNS) --rounds $(BENCH_REAL_NODE_ROUNDS) ..."; \
		$(PY) bench/real_node.py --runs $(BENCH_RUNS) --rounds $(BENCH_REAL_NODE_ROUNDS) --threads $(BENCH_THREADS) \
			$(BENCH_COMMON) --out $(BENCH_STATE)/real_node.json; \
	fi

# Scale to zero through slm-gateway on the real node with the metrics pipeline (Prometheus, KEDA, metrics-server as
# host processes; `make cluster-bins` builds them): first token from zero by step (model cached / not cached), the
# gateway's wake modes direct vs metric, prefix affinity on/off with 2 replicas. Needs what bench-real-node needs.
BENCH_STZ_ROUNDS ?= 2
BENCH_STZ_TRIALS ?= 5
.PHONY: bench-scale-to-zero
bench-scale-to-zero: install ## Cold start from zero through the gateway, wake modes, prefix affinity (~10 min)
	@mkdir -p $(BENCH_STATE)
	@missing=$$(PYTHONPATH=tests $(PY) -c 'from cluster.realnode import missing_packages; \
		print(" ".join(sorted(set(missing_packages().values()))))'); \
	bins=$$(PYTHONPATH=tests $(PY) -c 'from cluster import binaries; \
		print(" ".join(p.name for p in binaries().missing_pipeline()))'); \
	if [ "$$(id -u)" != 0 ] || [ -n "$$missing" ]; then \
		echo ">> bench-scale-to-zero needs root and these Debian packages: $${missing:-none missing}; not run"; \
	elif [ -n "$$bins" ]; then \
		echo ">> bench-scale-to-zero needs the metrics pipeline's binaries ($$bins: make cluster-bins); not run"; \
	else \
		echo "$(PY) bench/scale_to_zero.py --rounds $(BENCH_STZ_ROUNDS) --trials $(BENCH_STZ_TRIALS) ..."; \
		$(PY) bench/scale_to_zero.py --rounds $(BENCH_STZ_ROUNDS) --trials $(BENCH_STZ_TRIALS) \
			--threads $(BENCH_THREADS) --out $(BENCH_STATE)/scale_to_zero.json; \
	fi

bench-report: install ## Regenerate docs/benchmarks.md and its plots from .state/bench/*.json
	$(PY) bench/report.py --state $(BENCH_STATE) --out docs/benchmarks.md

# Constrained decoding (issue 19's figure): a forced tool call under its JSON-schema grammar against free generation,
# and against masking the whole vocabulary at every token (the engine's sampling before the grammar sampler).
.PHONY: bench-constrained
bench-constrained: install ## Tool-call grammar vs free generation, 1 and 4 sequences, T=0 and 0.8 (~6 min on 2 cores)
	@mkdir -p $(BENCH_STATE)
	$(PY) bench/constrained_decoding.py --runs $(BENCH_SWEEP_RUNS) --threads $(BENCH_THREADS) --settle $(BENCH_SETTLE) \
		--out $(BENCH_STATE)/constrained_decoding.json
