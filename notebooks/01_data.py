# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The synthetic population and its biographies
# A small in-memory dataset: one bio of each style, the spans the probes will read, and how the
# augmentations change length and name mentions. Set `BIOLAB_NOTEBOOK_PEOPLE` to change the size.

# %%
import os
from collections import Counter

import matplotlib.pyplot as plt

from biolab.data.dataset import DataConfig, generate
from biolab.data.qa import format_qa

N = int(os.environ.get("BIOLAB_NOTEBOOK_PEOPLE", 2000))
presets = {
    "bioS_single": DataConfig(name="bioS_single", n_people=N),
    "bioS_multi5_permute_fullname": DataConfig(
        name="bioS_multi5_permute_fullname", n_people=N, multi=5, permute=1, fullname=True
    ),
    "bioR_single": DataConfig(name="bioR_single", style="bioR", n_people=N),
}
data = {name: generate(cfg) for name, cfg in presets.items()}

# %% [markdown]
# ## One person, three styles

# %%
for name, d in data.items():
    bio = d.bios[0]
    print(f"{name}:\n  {bio.text}\n")
person = data["bioS_single"].people[0]
print({k: v for k, v in person.to_dict().items() if k != "id"})
print(format_qa(data["bioS_single"].qa[0].question, data["bioS_single"].qa[0].answer))

# %% [markdown]
# ## Where the values sit: spans recorded at generation time

# %%
bio = data["bioS_single"].bios[0]
for attribute, span in bio.spans.items():
    shown = [bio.text[s:e] for s, e in span] if attribute == "name" else bio.text[slice(*span)]
    print(f"{attribute:>13}: {span} -> {shown}")

# %% [markdown]
# ## Length in words per bio, and full-name mentions per bio

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for name, d in data.items():
    axes[0].hist([len(b.text.split()) for b in d.bios], bins=30, alpha=0.5, label=name)
    mentions = Counter(len(b.spans["name"]) for b in d.bios)
    axes[1].bar([f"{name}\n{k}" for k in sorted(mentions)], [mentions[k] for k in sorted(mentions)])
axes[0].set_xlabel("words per bio")
axes[0].legend(fontsize=7)
axes[1].set_ylabel("bios")
axes[1].tick_params(axis="x", labelsize=6)
fig.tight_layout()
