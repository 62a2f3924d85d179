#!/usr/bin/env python3
"""mini-swe-agent's side of scripts/bench_shell_agents.py: --episodes episodes of its
DefaultAgent (text mode, LitellmTextbasedModel, the packaged mini_textbased.yaml config) on a
LocalEnvironment each in a folder of its own, --concurrency at a time in a thread pool (as its
batch runners run them), against an OpenAI-compatible server at --base-url. Prints one JSON line:
episodes, exit statuses and model calls."""

import argparse
import collections
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("MSWEA_COST_TRACKING", "ignore_errors")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import yaml  # noqa: E402
from minisweagent.agents.default import DefaultAgent  # noqa: E402
from minisweagent.config import builtin_config_dir  # noqa: E402
from minisweagent.environments.local import LocalEnvironment  # noqa: E402
from minisweagent.models.litellm_textbased_model import LitellmTextbasedModel  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--episodes", type=int, required=True)
    ap.add_argument("--concurrency", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    config = yaml.safe_load((Path(builtin_config_dir) / "mini_textbased.yaml").read_text())
    agent_cfg = {k: v for k, v in config["agent"].items() if k in ("system_template", "instance_template")}
    agent_cfg["step_limit"] = args.steps + 2
    agent_cfg["cost_limit"] = 0
    model_cfg = {k: v for k, v in config["model"].items() if k != "model_kwargs"}

    def episode(i):
        cwd = args.workdir / f"episode-{i}"
        cwd.mkdir(parents=True, exist_ok=True)
        model = LitellmTextbasedModel(
            model_name="openai/default",
            model_kwargs={"api_base": args.base_url, "api_key": "unused", "max_tokens": 64},
            cost_tracking="ignore_errors",
            **model_cfg,
        )
        env = LocalEnvironment(cwd=str(cwd), timeout=30)
        agent = DefaultAgent(model, env, **agent_cfg)
        try:
            result = agent.run("Print hi ten times, then submit.")
            return result.get("exit_status", "?"), agent.n_calls
        except Exception as e:  # counted, not fatal: the benchmark reports it
            return type(e).__name__, agent.n_calls

    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        results = list(pool.map(episode, range(args.episodes)))
    statuses = collections.Counter(r[0] for r in results)
    print(json.dumps({
        "episodes": len(results),
        "exit_statuses": dict(statuses),
        "model_calls": sum(r[1] for r in results),
    }))
    # Every episode must have run to its submission for the figures to mean anything.
    raise SystemExit(0 if statuses.get("Submitted", 0) == len(results) else 1)


if __name__ == "__main__":
    main()
