"""CoE: assembly into standard MoE checkpoints, the routing loss, what trains in each stage, the benchmark."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors import safe_open

from mentor.coe.assemble import assemble_moe, save_moe
from mentor.coe.freezing import freeze_for_expert_training, freeze_for_stage2
from mentor.coe.routing import CoEExpertUtilization, router_class, routing_loss, routing_loss_per_token
from mentor.errors import MentorError
from mentor.models.tiny import build_char_tokenizer, build_tiny_model, tiny_config

TOKENIZER = build_char_tokenizer()


# neither transformers 4.x default (Qwen3-MoE 1e4, Mixtral 1e6), and scaled: a checkpoint that loses either
# still loads, with other logits
SCALED_ROPE = {"rope_type": "linear", "factor": 2.0, "rope_theta": 25_000.0}


def _base_and_experts(arch: str, num_experts: int = 3, rope: dict | None = None):
    """A random base and experts that differ from it only in their MLPs (as FFN-only training leaves them)."""
    config = tiny_config(arch, len(TOKENIZER), 32, 2, 4, tokenizer=TOKENIZER, max_positions=64)
    config.head_dim = 16  # != hidden / heads, as in Qwen3-0.6B (1024 / 16 heads, head_dim 128): must carry over
    if rope is not None:
        config.rope_parameters = dict(rope)
    base = build_tiny_model(config)
    experts = []
    for i in range(num_experts):
        expert = build_tiny_model(base.config)
        expert.load_state_dict(base.state_dict())
        torch.manual_seed(100 + i)
        with torch.no_grad():
            for name, param in expert.named_parameters():
                if ".mlp." in name:
                    param.add_(0.5 * torch.randn_like(param))
        experts.append(expert)
    return base, experts


def _force_routing(moe, expert: int):
    """Route every token of every layer to ``expert`` in BOTH top-2 slots, weights 0.5 + 0.5 (sum 1, as after
    renormalisation). Any other choice for the second slot would mix in another expert's output."""

    def hook(module, args, output):
        logits = output[0]
        n, k = logits.shape[0], module.top_k
        return logits, torch.full((n, k), 1.0 / k), torch.full((n, k), expert, dtype=torch.long)

    return [m.register_forward_hook(hook) for m in moe.modules() if isinstance(m, router_class(moe))]


@pytest.mark.parametrize("arch,moe_class", [("qwen3", "Qwen3MoeForCausalLM"), ("llama", "MixtralForCausalLM")])
def test_forced_routing_reproduces_each_expert(arch, moe_class):
    base, experts = _base_and_experts(arch)
    moe = assemble_moe(base, experts, top_k=2).eval()
    assert type(moe).__name__ == moe_class
    ids = torch.tensor([TOKENIZER("12+34*5=58;x=3")["input_ids"]])
    for c, expert in enumerate(experts):
        handles = _force_routing(moe, c)
        with torch.no_grad():
            difference = (moe(ids).logits - expert.eval()(ids).logits).abs().max().item()
        for h in handles:
            h.remove()
        assert difference < 1e-5, (c, difference)
    # and the experts really differ, so the check above could fail
    with torch.no_grad():
        assert (experts[0](ids).logits - experts[1](ids).logits).abs().max() > 1e-2


@pytest.mark.parametrize(
    "arch,expert_key", [("qwen3", "mlp.experts.2.gate_proj.weight"), ("llama", "block_sparse_moe.experts.2.w1.weight")]
)
def test_saved_moe_is_a_standard_checkpoint(tmp_path, arch, expert_key):
    from transformers import AutoModelForCausalLM

    base, experts = _base_and_experts(arch, rope=SCALED_ROPE)
    moe = assemble_moe(base, experts, top_k=2).eval()
    path = save_moe(moe, TOKENIZER, tmp_path / "moe")
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert f"model.layers.1.{expert_key}" in keys  # per-expert layout: what vLLM's loaders read
    assert not any("gate_up_proj" in k for k in keys)
    config = json.loads((path / "config.json").read_text())
    assert config["num_experts_per_tok"] == 2 and config["tie_word_embeddings"] is True
    reloaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert reloaded.config.rope_parameters == base.config.rope_parameters
    ids = torch.tensor([TOKENIZER("7*8+9=")["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, moe(ids).logits, atol=1e-6)
    generated = reloaded.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=TOKENIZER.pad_token_id)
    assert generated.shape[1] > ids.shape[1]


@pytest.mark.parametrize(
    "arch,rope",
    [("qwen3", SCALED_ROPE), ("llama", SCALED_ROPE), ("llama", {"rope_type": "default", "rope_theta": 500_000.0})],
)
def test_saved_moe_config_has_what_transformers4_and_vllm_read(tmp_path, arch, rope):
    """transformers 5 writes rope_parameters / dtype / num_local_experts; 4.x and vLLM read other names and
    silently use their defaults without them (Mixtral's rope_theta 1e6, Qwen3-MoE's 128 experts)."""
    base, experts = _base_and_experts(arch, rope=rope)
    path = save_moe(assemble_moe(base, experts, top_k=2), TOKENIZER, tmp_path / "moe")
    config = json.loads((path / "config.json").read_text())
    assert config["rope_theta"] == base.config.rope_parameters["rope_theta"] == rope["rope_theta"]
    expected_scaling = None if rope["rope_type"] == "default" else {"rope_type": "linear", "factor": 2.0}
    assert config["rope_scaling"] == expected_scaling
    assert config["torch_dtype"] == "float32"
    if arch == "qwen3":
        assert config["model_type"] == "qwen3_moe" and config["num_experts"] == 3
    tokenizer_config = json.loads((path / "tokenizer_config.json").read_text())
    assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"  # 5's TokenizersBackend is unknown to 4.x
    assert tokenizer_config["additional_special_tokens"] == ["<|user|>", "<|assistant|>"]
    assert "extra_special_tokens" not in tokenizer_config  # a list there breaks 4.x (it expects a dict)
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(path)
    assert reloaded("<|user|>7*8")["input_ids"] == TOKENIZER("<|user|>7*8")["input_ids"]
    assert reloaded.chat_template == TOKENIZER.chat_template


TRANSFORMERS4 = os.environ.get("MENTOR_TRANSFORMERS4_PYTHON", "")


@pytest.mark.skipif(
    not TRANSFORMERS4,
    reason="set MENTOR_TRANSFORMERS4_PYTHON to a python with transformers 4.57 "
    "(python3 -m venv /tmp/tf457 && /tmp/tf457/bin/pip install torch==2.13.0 'transformers==4.57.*' "
    "safetensors) to check that CoE checkpoints give the same logits there",
)
def test_saved_moe_gives_the_same_logits_under_transformers4(tmp_path):
    from safetensors.torch import load_file

    from mentor.evaluation.flops import MatmulParams

    text, saved = "12+34*5=58;x=3", {}
    for arch in ("qwen3", "llama"):
        base, experts = _base_and_experts(arch, rope=SCALED_ROPE)
        moe = assemble_moe(base, experts, top_k=2).eval()
        path = save_moe(moe, TOKENIZER, tmp_path / arch)
        ids = TOKENIZER(text)["input_ids"]
        with torch.no_grad():
            saved[str(path)] = (moe, ids, moe(torch.tensor([ids])).logits[0])
    out = tmp_path / "transformers4.json"
    subprocess.run(
        [TRANSFORMERS4, "tests/transformers4_logits.py", str(out), text, *saved],
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        timeout=300,
    )
    for directory, result in json.loads(out.read_text()).items():
        moe, ids, logits = saved[directory]
        assert result["version"].startswith("4.") and result["model_class"] == type(moe).__name__
        chat = TOKENIZER.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        assert result["ids"] == ids and result["chat_ids"] == list(getattr(chat, "input_ids", chat))
        difference = (load_file(f"{directory}/logits_transformers4.safetensors")["logits"] - logits).abs().max()
        print(f"{type(moe).__name__}: max |logits(transformers {result['version']}) - logits(5)| = {difference:.3g}")
        assert difference < 1e-5, (directory, float(difference))
        assert result["matmul"] == MatmulParams.of(moe).total  # 4.x's per-expert layout counts the same


def test_assembly_refuses_unknown_bases_and_experts_that_moved_attention():
    qwen2 = build_tiny_model(tiny_config("qwen2", len(TOKENIZER), 32, 1, 4, tokenizer=TOKENIZER))
    with pytest.raises(MentorError, match="cannot build a CoE MoE from a 'qwen2' base"):
        assemble_moe(qwen2, None, num_experts=2)
    base, experts = _base_and_experts("qwen3", 2)
    with torch.no_grad():
        experts[1].model.layers[0].self_attn.q_proj.weight.add_(1.0)
    with pytest.raises(MentorError, match="expert 1 differs from the base in model.layers.0.self_attn.q_proj"):
        assemble_moe(base, experts)


def test_margin_loss_matches_hand_computed_values():
    logits = torch.tensor(
        [
            [3.0, 1.0, 2.0],  # label 1, k=2: 2nd largest 2.0, labelled 1.0 -> 1.0
            [1.0, 3.0, 2.0],  # label 2 already in the top-2 -> 0
            [2.0, 2.0, 1.0],  # label 1 ties the 2nd largest -> 0
            [5.0, 0.5, -1.0],
        ]
    )  # label 2: 0.5 - (-1.0) -> 1.5
    labels = torch.tensor([1, 2, 1, 2])
    assert routing_loss_per_token(logits, labels, 2, "margin").tolist() == [1.0, 0.0, 0.0, 1.5]
    # k=1: the labelled logit must be the largest; a tie with the largest costs nothing
    assert routing_loss_per_token(logits, labels, 1, "margin").tolist() == [2.0, 1.0, 0.0, 6.0]
    # per layer over masked tokens, then averaged over layers: sequences of 2 tokens, one label per sequence
    layer_a = logits.view(2, 2, 3)
    layer_b = torch.zeros(2, 2, 3)  # all tied: zero loss in this layer
    seq_labels = torch.tensor([1, 2])
    mask = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    # layer a, token labels [1, 1, 2, 2]: losses 1.0, (masked), 2.0 - 1.0 = 1.0, 1.5
    expected_a = (1.0 + 1.0 + 1.5) / 3
    loss = routing_loss([layer_a.reshape(4, 3), layer_b.reshape(4, 3)], seq_labels, mask, 2, "margin")
    assert loss.item() == pytest.approx((expected_a + 0.0) / 2)
    ce = routing_loss([layer_a.reshape(4, 3)], seq_labels, mask, 2, "ce")
    token_labels = torch.tensor([1, 1, 2, 2])
    by_hand = -torch.log_softmax(logits, -1)[torch.arange(4), token_labels]
    assert ce.item() == pytest.approx(float((by_hand * mask.flatten()).sum() / 3))


def _stage2_trainer(tmp_path, moe, variant: str, router_loss: str = "margin"):
    from mentor.config import TrainConfig
    from mentor.data.prompts import EncodedExample, ExampleStream, encode_completion
    from mentor.train.trainer import Trainer

    freeze_for_stage2(moe, variant)
    data = [("color of bilo?", "red", 0), ("12+3*4=", "3*4=12;12+12=24", 1), ("a=5;b=a;print(b)", "a=5;b=5;5", 2)]
    examples = [
        EncodedExample(TOKENIZER(p)["input_ids"], encode_completion(TOKENIZER, c), p, cat) for p, c, cat in data
    ]
    config = TrainConfig(
        output_dir=str(tmp_path / variant), steps=2, batch_size=3, group_size=1, learning_rate=1e-2, quiet=True
    )
    trainer = Trainer(config, moe, TOKENIZER, ExampleStream(examples, 3))
    algorithm = CoEExpertUtilization(TOKENIZER.pad_token_id, moe, top_k=2, router_loss=router_loss)
    return trainer, algorithm


@pytest.mark.parametrize("variant", ["non-ffn", "router"])
def test_stage2_trains_only_what_the_variant_allows(tmp_path, variant):
    base, experts = _base_and_experts("qwen3")
    moe = assemble_moe(base, experts, top_k=2)
    before = {n: p.detach().clone() for n, p in moe.named_parameters()}
    trainer, algorithm = _stage2_trainer(tmp_path, moe, variant)
    history = trainer.train(algorithm)
    assert history[-1]["router_loss"] >= 0.0
    for name, param in moe.named_parameters():
        changed = not torch.equal(param, before[name])
        if ".mlp.experts." in name or (variant == "router" and ".mlp.gate." not in name):
            assert not changed, f"{name} is frozen in stage 2 ({variant}) but changed"
        elif ".mlp.gate." in name or "q_proj" in name:
            assert changed, f"{name} should train in stage 2 ({variant})"


def test_routing_loss_alone_moves_the_labelled_expert_into_the_top_k(tmp_path):
    base, experts = _base_and_experts("qwen3")
    moe = assemble_moe(base, experts, top_k=1)
    trainer, algorithm = _stage2_trainer(tmp_path, moe, "router")
    batch, _ = algorithm.collect(trainer.stream.next_batch())

    def margin_now():
        with torch.no_grad():
            trainer.policy(batch.input_ids, batch.attention_mask, positions=batch.loss_mask > 0)
            return algorithm.auxiliary_loss(batch, batch.num_loss_tokens)[1]["router_loss"]

    start = margin_now()
    algorithm.coef = 100.0  # the CE term barely moves routers; the routing loss must do the work
    for _ in range(15):
        trainer.update(batch, algorithm)
    assert start > 0 and margin_now() < 0.5 * start


def test_expert_training_moves_only_mlps_and_new_token_rows(tmp_path):
    from mentor.config import SFTConfig
    from mentor.data.prompts import EncodedExample, encode_completion
    from mentor.recipes.sft import run_sft

    base, _ = _base_and_experts("llama", 0)
    new_token = TOKENIZER.convert_tokens_to_ids("<|assistant|>")
    before = {n: p.detach().clone() for n, p in base.named_parameters()}
    freeze_for_expert_training(base, [new_token])
    examples = [EncodedExample(TOKENIZER("<|assistant|>1+2=")["input_ids"], encode_completion(TOKENIZER, "3"))]
    config = SFTConfig(
        model="(in memory)",
        data="(in memory)",
        output_dir=str(tmp_path / "expert"),
        steps=2,
        batch_size=1,
        group_size=1,
        learning_rate=1e-2,
        quiet=True,
    )
    run_sft(config, base, TOKENIZER, examples)
    for name, param in base.named_parameters():
        if "embed_tokens" in name:
            moved = (param != before[name]).any(dim=1).nonzero().flatten().tolist()
            assert moved == [new_token]
        else:
            assert torch.equal(param, before[name]) != (".mlp." in name), name
