"""Prompt text: what the annotator sees and how synthesised demos are cleaned."""

import pytest

from freeal_ray.prompts import answer_choices, classification_prompt, clean_synthetic, synthesis_stops
from freeal_ray.task import get_preset


def test_classification_prompt_puts_demos_before_the_row_and_ends_at_the_label():
    task = get_preset("sentiment")
    prompt = classification_prompt(task, [("far demo", "negative"), ("near demo", "positive")], "the row\nsplit")
    assert prompt.index("far demo") < prompt.index("near demo") < prompt.index("the row split")
    assert prompt.endswith("the row split\nLabel:")
    assert prompt.startswith(task.instruction)


def test_zero_shot_prompt_has_no_demos():
    task = get_preset("sentiment")
    prompt = classification_prompt(task, [], "the row")
    assert prompt.count("Label:") == 1


def test_answer_choices_carry_the_leading_space_of_the_next_token():
    assert answer_choices(get_preset("sentiment")) == [" negative", " positive"]


def test_synthetic_demos_keep_whole_sentences_on_one_line():
    assert clean_synthetic("I was charged twice. Thanks.A ticket in the billing class") == "I was charged twice. Thanks."
    assert clean_synthetic("  two\nlines.  ") == "two lines."
    assert clean_synthetic("no sentence end") == "no sentence end"
    stops = synthesis_stops(get_preset("sentiment"))
    assert "\n" in stops and any(s.endswith(":") for s in stops)


def test_prompts_reach_the_engine_sorted_so_shared_prefixes_sit_together():
    from freeal_ray.engines import in_prefix_order

    seen = []
    answers = in_prefix_order(["b 2", "a 1", "b 1"], lambda ordered: seen.extend(ordered) or [p.upper() for p in ordered])
    assert seen == ["a 1", "b 1", "b 2"]
    assert answers == ["B 2", "A 1", "B 1"]


def test_written_examples_that_repeat_a_shown_row_or_serve_two_labels_are_not_demos():
    from freeal_ray.synthesis import new_examples

    row = "chabrol has taken promising material for a black comedy and turned it instead into a somber chamber drama ."
    shown = [[row, "the film opens in 1950s paris ."]] * 6
    labels = ["subjective", "objective", "objective", "subjective", "objective", "subjective"]
    texts = [
        row,                                                  # the row itself
        row + "Create a Python code to classify the given sentences.",  # the row with a tail
        "The city of Los Angeles is a bustling metropolis.",  # new: kept
        "the plot drags .",                                   # written for both labels
        "The plot drags.",
        "  ",
    ]
    demos, counts = new_examples(labels, texts, shown)
    assert demos.to_dict("records") == [{"label": "objective", "text": "The city of Los Angeles is a bustling metropolis."}]
    assert counts == {"written": 6, "empty": 1, "copied_a_corpus_row": 2, "written_for_two_labels": 2,
                      "repeated": 0, "kept": 1}
    again, counts = new_examples(["objective"] * 2, ["A new fact.", "a new  fact."], [[row]] * 2)
    assert len(again) == 1 and counts["repeated"] == 1


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _tokenizer_folder(path, chat_template):
    from tiny_models import _train_tokenizer

    tokenizer = _train_tokenizer(["the film was great", "the plot was dull"])
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)
    return str(path)


def test_chat_prompts_use_the_models_template_with_demos_listed_or_as_turns(tmp_path):
    from freeal_ray.prompts import chat_renderer

    task = get_preset("sentiment")
    render = chat_renderer(_tokenizer_folder(tmp_path, CHAT_TEMPLATE))
    demos = [("far demo", "negative"), ("near demo", "positive")]
    listed = classification_prompt(task, demos, "the row", "chat", render)
    assert listed.startswith(f"<|system|>{task.instruction}")
    assert listed.count("<|user|>") == 1 and listed.index("far demo") < listed.index("near demo") < listed.index("the row")
    assert listed.endswith("<|assistant|>")  # the answer comes next, as the assistant's reply
    turns = classification_prompt(task, demos, "the row", "chat-turns", render)
    assert turns.count("<|user|>") == 3 and "<|assistant|>negative<|end|>" in turns and "<|assistant|>positive<|end|>" in turns
    assert turns.index("near demo") < turns.index("the row") and turns.endswith("<|assistant|>")
    assert answer_choices(task, "chat") == ["negative", "positive"]  # no leading space in a fresh reply


def test_chat_style_needs_a_chat_template(tmp_path):
    import pytest

    from freeal_ray.errors import ConfigError
    from freeal_ray.prompts import chat_renderer

    with pytest.raises(ConfigError, match="prompt_style"):
        chat_renderer(_tokenizer_folder(tmp_path, None))


def test_a_prompt_too_long_drops_its_least_similar_demos_first_then_cuts_its_text():
    from freeal_ray.errors import ConfigError
    from freeal_ray.prompt_fit import fit_prompt

    def build(demos, text):
        return "INSTRUCTION|" + "".join(f"[{d}]" for d in demos) + "|" + text

    demos = ["far-demo", "mid-demo", "near-demo"]  # least similar first, as prompts show them
    text = "the row's own text"
    whole = build(demos, text)
    assert fit_prompt(build, demos, text, len, len(whole)) == (whole, 0, False)
    # one demo too many: the farthest goes, the nearest stays
    prompt, dropped, cut = fit_prompt(build, demos, text, len, len(whole) - 1)
    assert (dropped, cut) == (1, False) and "far-demo" not in prompt and "near-demo" in prompt
    # no room for any demo: all go, then the text is cut at its end to the longest that fits
    budget = len(build([], text)) - 5
    prompt, dropped, cut = fit_prompt(build, demos, text, len, budget)
    assert (dropped, cut) == (3, True) and len(prompt) == budget and prompt == build([], text[: len(text) - 5])
    with pytest.raises(ConfigError, match="max_model_len"):
        fit_prompt(build, demos, text, len, len("INSTRUCTION||") - 1)
