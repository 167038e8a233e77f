"""The engines that write bioR_llm bios (biolab.data.llm_bios): a local model folder behind
``Generate``, a callable ``(prompts, seeds) -> continuations``. transformers on the device biolab picks,
with a logits processor that samples each row from its own seeded stream (so a bio does not depend on
its batch); vLLM with one seeded SamplingParams per prompt where it is installed and CUDA is there.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from biolab.data.llm_bios import Generate, LLMConfig, Prompt
from biolab.errors import ConfigError


def check_model_folder(cfg: LLMConfig) -> None:
    """A one-line ConfigError unless ``cfg.model`` is a local transformers model folder and the engine
    asked for is here. Not part of ``validate``: a written dataset's config stays loadable on a machine
    without the model."""
    folder = Path(cfg.model)
    if not folder.is_dir():
        raise ConfigError(f"data.llm.model={cfg.model} is not a folder (a local model: config.json, weights)")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"data.llm.model={cfg.model} has no config.json: not a transformers model folder")
    resolve_engine(cfg.engine)


def vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_engine(engine: str) -> str:
    """The engine that generates: ``auto`` takes vLLM only where it is installed and CUDA is there."""
    if engine == "auto":
        return "vllm" if vllm_usable() else "transformers"
    if engine == "vllm" and not vllm_usable():
        raise ConfigError("data.llm.engine=vllm needs the vllm package and a CUDA device; use auto")
    return engine


def load_generator(cfg: LLMConfig) -> Generate:
    """The model of ``cfg.model`` behind ``Generate``: vLLM where ``resolve_engine`` picks it, else
    transformers on ``biolab.device.pick_device()``."""
    from biolab.device import pick_device

    engine = resolve_engine(cfg.engine)
    if engine == "vllm":
        return VLLMGenerator(cfg)
    return TransformersGenerator(cfg, pick_device())


def prompt_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The prompt's token ids: the message in the model's chat template (with the answer's start
    where the assistant's turn begins), or, for a base model without one, the message and the
    opening after a blank line."""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt.message}], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(head + prompt.opening, add_special_tokens=False)["input_ids"]
    return tokenizer(f"{prompt.message}\n\n{prompt.opening}")["input_ids"]


def continuation_text(tokenizer, prompt: list[int], new: list[int]) -> str:
    """The text ``new`` adds to ``prompt``: decoded together, less the prompt's text, so a leading
    space that a tokenizer shows only after a preceding token (SentencePiece) is kept."""
    whole = tokenizer.decode(prompt + new, skip_special_tokens=True)
    head = tokenizer.decode(prompt, skip_special_tokens=True)
    return whole[len(head) :] if whole.startswith(head) else tokenizer.decode(new, skip_special_tokens=True)


def top_p_sample(logits, uniforms, temperature: float, top_p: float):
    """One token per row: softmax at ``temperature``, nucleus ``top_p`` (the smallest set of the most
    likely tokens holding that mass), drawn by inverse CDF with each row's uniform in [0, 1)."""
    import torch

    ordered, order = torch.sort(logits.float() / temperature, dim=-1, descending=True)
    probs = torch.softmax(ordered, dim=-1)
    mass_before = probs.cumsum(-1) - probs
    probs = probs * (mass_before < top_p)  # the most likely token always stays
    cdf = probs.cumsum(-1)
    target = uniforms.to(cdf.device, cdf.dtype)[:, None] * cdf[:, -1:]
    pick = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return order.gather(-1, pick).squeeze(-1)


class TransformersGenerator:
    """``Generate`` with transformers from a local folder: left-padded batches through
    ``model.generate`` in greedy mode, with a logits processor that does the sampling, each row with
    its own seeded random stream (transformers' own sampling shares one stream across the batch)."""

    engine = "transformers"

    def __init__(self, cfg: LLMConfig, device: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg, self.device = cfg, device
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(cfg.model, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(
                cfg.model, local_files_only=True, dtype=cfg.dtype
            )
        except (OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"data.llm.model={cfg.model}: cannot load it: {first}") from None
        self.model.to(device).eval()
        self.eos = self.eos_ids()
        if not self.eos:
            raise ConfigError(f"data.llm.model={cfg.model}: neither model nor tokenizer names an EOS token")
        pad = self.tokenizer.pad_token_id
        self.pad = self.eos[0] if pad is None else pad

    def eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)

    def __call__(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[str]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        rows = [prompt_ids(self.tokenizer, p) for p in prompts]
        width = max(len(r) for r in rows)
        self.check_length(width)
        ids = torch.tensor([[self.pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        config = GenerationConfig(
            max_new_tokens=self.cfg.max_new_tokens, do_sample=False, num_beams=1,
            pad_token_id=self.pad, eos_token_id=self.eos,
        )  # fmt: skip
        sampler = SeededSampler(seeds, self.cfg.temperature, self.cfg.top_p)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=ids, attention_mask=mask, generation_config=config,
                logits_processor=LogitsProcessorList([sampler]),
            )  # fmt: skip
        new = [self.until_eos(row[width:].tolist()) for row in out]
        return [continuation_text(self.tokenizer, r, n) for r, n in zip(rows, new, strict=True)]

    def check_length(self, width: int) -> None:
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if isinstance(limit, int) and width + self.cfg.max_new_tokens > limit:
            raise ConfigError(
                f"data.llm: a prompt of {width} tokens and max_new_tokens={self.cfg.max_new_tokens} "
                f"exceed the {limit} positions of {self.cfg.model}"
            )

    def until_eos(self, tokens: list[int]) -> list[int]:
        cut = next((i for i, t in enumerate(tokens) if t in self.eos), len(tokens))
        return tokens[:cut]


class SeededSampler:
    """A transformers logits processor that samples each row from its own stream and leaves only the
    token drawn, so that greedy decoding takes it: a row's draws depend on its seed alone, not on the
    other rows of its batch."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float):
        self.streams = [np.random.default_rng(s) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids, scores):
        import torch

        uniforms = torch.tensor([s.random() for s in self.streams], dtype=torch.float64)
        tokens = top_p_sample(scores, uniforms, self.temperature, self.top_p)
        chosen = torch.full_like(scores, float("-inf"))
        chosen.scatter_(-1, tokens[:, None], 0.0)
        return chosen


class VLLMGenerator:
    """``Generate`` with vLLM (CUDA only): one seeded SamplingParams per prompt, the same prompt ids as
    the transformers path."""

    engine = "vllm"

    def __init__(self, cfg: LLMConfig):
        from vllm import LLM

        self.cfg = cfg
        self.llm = LLM(model=cfg.model, tokenizer=cfg.model, dtype=cfg.dtype, seed=0)
        self.tokenizer = self.llm.get_tokenizer()

    def __call__(self, prompts: Sequence[Prompt], seeds: Sequence[int]) -> list[str]:
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                           max_tokens=self.cfg.max_new_tokens, seed=s)
            for s in seeds
        ]  # fmt: skip
        asked = [{"prompt_token_ids": prompt_ids(self.tokenizer, p)} for p in prompts]
        outputs = self.llm.generate(asked, params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]
