# %% [markdown]
# # autocompress from Python
#
# A notebook as a plain script: each `# %%` is a cell (VS Code, PyCharm and Jupytext open it as a
# notebook; `python examples/api_quickstart.py` runs it top to bottom). It compresses a tiny
# classifier built from a config (no download), plots the Pareto front, then loads, runs and
# exports the recommended model. For your own model, pass a checkpoint directory or a cached Hub
# id as `model=` and a data file, a saved `datasets` directory or a `Dataset` object as `data=`.

# %%
import os
from pathlib import Path

import autocompress
from autocompress.testing import write_tiny_task

workdir = Path(os.environ.get("AUTOCOMPRESS_EXAMPLE_DIR", "example-run"))
task = write_tiny_task(workdir / "task", 300)  # task/model (a tiny BERT classifier) and task/data.csv

# %% [markdown]
# ## Search
# Every option of `autocompress search` is a keyword argument (`max_latency_ms=`, `trials=`, ...).
# Re-running this cell with a larger `trials` continues the same study.

# %%
result = autocompress.compress(
    task / "model", task / "data.csv", trials=3, out=workdir / "run", max_accuracy_drop=0.05,
    callbacks=[lambda trial: print(f"trial {trial.number}: {trial.ended}, {trial.latency_ms:.2f} ms")],
)
print(result)

# %% [markdown]
# ## The Pareto front, as a DataFrame and as a plot

# %%
columns = ["number", "test_accuracy", "val_accuracy", "latency_ms", "speedup", "memory_mb", "parameters"]
print(result.front[columns].to_string(index=False))

# %%
import matplotlib  # noqa: E402

matplotlib.use("Agg")  # in a notebook, drop this line to see the figure inline
import matplotlib.pyplot as plt  # noqa: E402

complete = result.trials[result.trials["ended"] == "complete"]
fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(complete["latency_ms"], complete["test_accuracy"], color="#9e9e9e", label="trials")
ax.plot(result.front["latency_ms"], result.front["test_accuracy"], "o-", color="#2ca02c", label="Pareto front")
ax.scatter([result.baseline.latency_ms], [result.baseline.test_accuracy], marker="*", s=200, color="#d62728",
           label="teacher")
ax.set_xlabel("latency (ms, median)")
ax.set_ylabel("test accuracy")
ax.legend()
fig.savefig(workdir / "front.png", dpi=100, bbox_inches="tight")
print(f"plot: {workdir / 'front.png'}")

# %% [markdown]
# ## Load the recommended model, run it, export it

# %%
best = result.recommended
model, tokenizer = best.load()
logits = model(**tokenizer(["a superb, warm film", "a dull, boring plot"], return_tensors="pt", padding=True)).logits
print(f"trial #{best.trial}: {best.plan}")
print([model.config.id2label[int(i)] for i in logits.argmax(-1)])

# %%
shipped = best.export(workdir / "shipped")
print(f"exported to {shipped}: transformers.pipeline('text-classification', model='{shipped}') runs it "
      "(trust_remote_code=True when the card says so)")
