"""The kopf controller. Its handlers live in slm_operator.controller.handlers (`slm operator run` loads them)."""
