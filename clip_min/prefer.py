"""Which descriptions does a CLIP prefer? A miniature of EX2, aligned by policy gradients.

EX2 ("If CLIP Could Talk", Esfandiarpoor et al. 2024) fine-tunes a language model to write
descriptions of a concept that a vision-language model rewards, with a KL penalty that keeps
it near the language model it started from, and then reads what the aligned generator writes.
Here the generator is a policy over a fixed pool of phrases (clip_min/data/phrases.py): for each
concept k, ``slots`` independent categorical distributions, one per phrase of the description,

    pi_theta(d | k) = prod_s softmax(theta[k, s])[d_s]          d = (d_1, ..., d_S), d_s in 1..P

starting uniform (theta = 0), as EX2's generator starts as the language model. It is trained to
maximise the KL-regularised reward (EX2's objective, as in RLHF)

    J(theta) = E_{d ~ pi_theta}[ r(d, k) ] - beta * KL(pi_theta || pi_0)

with REINFORCE and a leave-one-out baseline (:func:`reinforce_loss`); the KL to the uniform
start is computed exactly (:func:`kl_to_uniform`). The reward is the model's score
(:class:`ClipReward`). Nothing here knows about files or commands; clip_min/report/prefer.py runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .model import CLIP
from .sorted_parts import in_sorted_parts
from .tokenizer import get_tokenizer

# The transfer tasks' prompt ("An image of {}"), extended by the description: at theta = 0 the
# policy's texts are the zero-shot prompt plus random phrases.
DEFAULT_TEMPLATE = "An image of {concept}, {description}."

Reward = Callable[[torch.Tensor], torch.Tensor]  # actions (K, N, S) -> rewards (K, N)


@dataclass(frozen=True)
class PreferConfig:
    """How the policy is trained and read."""

    slots: int = 2  # S: phrases per description, each slot one categorical over the pool
    steps: int = 150  # policy-gradient steps
    samples: int = 32  # N: descriptions sampled per concept per step (the REINFORCE batch)
    lr: float = 0.1  # Adam's step size on the logits theta
    kl_weight: float = 1.0  # beta: weight of KL(pi || uniform), in units of the reward (C)
    eval_samples: int = 256  # descriptions sampled per concept to estimate a policy's mean reward
    seed: int = 0  # drives every sample
    template: str = DEFAULT_TEMPLATE  # T(d, k): how a description and its concept become one text

    def __post_init__(self):
        if self.slots < 1 or self.steps < 0 or self.eval_samples < 2:
            raise ValueError("--slots must be at least 1, --steps at least 0, --eval-samples at least 2")
        if self.samples < 2:
            raise ValueError(f"--samples must be at least 2 (the baseline leaves one out), got {self.samples}")
        if not (math.isfinite(self.lr) and self.lr > 0 and math.isfinite(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"--lr must be a positive number and --kl-weight a finite one, 0 or more; "
                             f"got {self.lr} and {self.kl_weight}")
        if "{concept}" not in self.template or "{description}" not in self.template:
            raise ValueError(f"--template must contain {{concept}} and {{description}}, got {self.template!r}")


# A draw keeps each of its K x N descriptions as a text of about 150 bytes until it is scored; a
# million of them is 150 MB, and more would not fit a laptop.
MAX_DRAWN_TEXTS = 1_000_000


def check_against_pool(config: PreferConfig, n_concepts: int, n_phrases: int) -> None:
    """Refuse sizes the concepts and the pool cannot use, stating the largest that makes sense."""
    if config.slots > n_phrases:
        raise ValueError(f"--slots {config.slots} is more than the pool's {n_phrases} phrases, and a description "
                         f"writes a phrase once however often it is drawn; use at most {n_phrases}")
    most = MAX_DRAWN_TEXTS // n_concepts
    for name, value in (("samples", config.samples), ("eval-samples", config.eval_samples)):
        if value > most:
            raise ValueError(f"--{name} {value} draws {value} descriptions for each of {n_concepts} concepts, more than "
                             f"the {MAX_DRAWN_TEXTS:,} texts a draw may hold; use at most {most}")


# ---- the policy ------------------------------------------------------------------------------


def sample(logits: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n descriptions per concept, d ~ pi_theta: (K, S, P) logits -> (K, n, S) phrase indices."""
    K, S, P = logits.shape
    probs = torch.softmax(logits.detach(), dim=-1).reshape(K * S, P)
    picks = torch.multinomial(probs, n, replacement=True, generator=generator)  # (K * S, n)
    return picks.reshape(K, S, n).transpose(1, 2)  # (K, n, S)


def log_prob(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi_theta(d | k) = sum_s log softmax(theta[k, s])[d_s]: (K, S, P), (K, N, S) -> (K, N)."""
    logp = torch.log_softmax(logits, dim=-1)  # (K, S, P)
    K, N, S = actions.shape
    picked = logp.unsqueeze(1).expand(K, N, S, -1).gather(-1, actions.unsqueeze(-1))  # (K, N, S, 1)
    return picked.squeeze(-1).sum(-1)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """KL(pi_theta || pi_0) per concept, pi_0 uniform over P phrases: sum_s sum_p pi_s(p) log(P pi_s(p)). (K,)"""
    logp = torch.log_softmax(logits, dim=-1)  # (K, S, P)
    return (logp.exp() * (logp + math.log(logits.shape[-1]))).sum(dim=(1, 2))


def leave_one_out_baseline(rewards: torch.Tensor) -> torch.Tensor:
    """b_n = mean of the other N - 1 rewards of the same concept: (K, N) -> (K, N).

    A baseline that does not depend on d_n keeps the estimate unbiased and lowers its variance.
    """
    N = rewards.shape[-1]
    return (rewards.sum(dim=-1, keepdim=True) - rewards) / (N - 1)


def reinforce_loss(logits: torch.Tensor, actions: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """REINFORCE: a surrogate whose gradient estimates -grad E_pi[r], one value per concept. (K,)

        grad_theta E_{d ~ pi}[r(d)] = E_{d ~ pi}[ (r(d) - b) grad_theta log pi_theta(d) ]
                                    ~ 1/N sum_n (r_n - b_n) grad_theta log pi_theta(d_n)
    """
    advantage = (rewards - leave_one_out_baseline(rewards)).detach()  # (K, N)
    return -(advantage * log_prob(logits, actions)).mean(dim=-1)


@dataclass
class Alignment:
    logits: torch.Tensor  # (K, S, P) the aligned policy's theta
    mean_rewards: list[float]  # per step, the mean reward of that step's samples over all concepts


def align(reward: Reward, n_concepts: int, n_phrases: int, config: PreferConfig) -> Alignment:
    """Maximise J(theta) = E[r] - beta KL(pi || pi_0) from theta = 0 with Adam; every concept is its own policy."""
    generator = torch.Generator().manual_seed(config.seed)
    logits = torch.zeros(n_concepts, config.slots, n_phrases, requires_grad=True)
    optimizer = torch.optim.Adam([logits], lr=config.lr)
    history = []
    for _ in range(config.steps):
        actions = sample(logits, config.samples, generator)  # (K, N, S)
        rewards = reward(actions).to(logits.dtype)  # (K, N)
        loss = (reinforce_loss(logits, actions, rewards) + config.kl_weight * kl_to_uniform(logits)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(rewards.mean().item())
    return Alignment(logits.detach(), history)


def estimate_reward(reward: Reward, logits: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """E_{d ~ pi}[r(d, k)] per concept from n samples, and its standard error: (K,), (K,)."""
    rewards = reward(sample(logits, n, generator)).double()  # (K, n)
    return rewards.mean(dim=-1), rewards.std(dim=-1) / math.sqrt(n)


def phrase_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """How often each phrase fills a slot, averaged over the slots: (K, S, P) -> (K, P), rows sum to 1."""
    return torch.softmax(logits, dim=-1).mean(dim=1)


def kind_shares(logits: torch.Tensor, kinds: list[str]) -> dict[str, float]:
    """Share of each kind among the phrases of the policy's descriptions, averaged over concepts."""
    mass = phrase_probabilities(logits).mean(dim=0)  # (P,)
    shares = {kind: 0.0 for kind in dict.fromkeys(kinds)}
    for kind, p in zip(kinds, mass.tolist()):
        shares[kind] += p
    return shares


# ---- the reward: the model's score -------------------------------------------------------------


def describe(phrases: list[str], picks: list[int]) -> str:
    """The description the slots spell: the picked phrases in slot order, a repeated one written once."""
    return ", ".join(dict.fromkeys(phrases[i] for i in picks))


class ClipReward:
    """r(d, k) = 1/|I_k| sum_{i in I_k} C(im_i, T(d, k)), C = e^t cos: EX2's reward, a concept's images.

    Since C is linear in the normalised image embedding, the mean over images is one dot product
    with their mean: r = e^t <T_hat, mean_i im_hat_i>. Rewards are cached per text, as a policy
    keeps sampling the descriptions it likes.
    """

    def __init__(self, model: CLIP, concepts: list[str], image_features: list[torch.Tensor], phrases: list[str],
                 template: str, device: str = "cpu", batch_size: int = 512):
        self.model, self.concepts, self.phrases = model, concepts, phrases
        self.template, self.device, self.batch_size = template, device, batch_size
        self.centroids = torch.stack([F.normalize(f.float(), dim=-1).mean(dim=0) for f in image_features])  # (K, D)
        self.scale = model.logit_scale.detach().float().exp().item()
        self.memo: dict[tuple[int, str], float] = {}
        self.cut = 0  # texts longer than the model's context, cut to fit; the caller reports them

    def text(self, concept: int, picks: list[int]) -> str:
        return self.template.format(concept=self.concepts[concept], description=describe(self.phrases, picks))

    @torch.no_grad()
    def __call__(self, actions: torch.Tensor) -> torch.Tensor:
        """Rewards (K, N) of phrase indices (K, N, S)."""
        K, N, _ = actions.shape
        keys = [(k, self.text(k, picks)) for k in range(K) for picks in actions[k].tolist()]
        missing = list(dict.fromkeys(key for key in keys if key not in self.memo))
        context = self.model.config.context_length
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            tokens, cut = get_tokenizer().tokenize_counting_cuts([text for _, text in chunk], context)  # (b, context)
            self.cut += cut
            text = F.normalize(in_sorted_parts(self.model.encode_text, tokens.to(self.device)).float().cpu(), dim=-1)  # (b, D)
            rows = torch.tensor([k for k, _ in chunk])
            values = self.scale * (text * self.centroids[rows]).sum(dim=-1)  # (b,)
            self.memo.update(zip(chunk, values.tolist()))
        return torch.tensor([self.memo[key] for key in keys]).reshape(K, N)
