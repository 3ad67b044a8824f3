"""NER's functional core: tokenising, aligning the LLM's spans to tokens, BIO tags, entity F1."""

from freeal_ray.metrics import entity_scores
from freeal_ray.ner import align_spans, entities, is_valid_bio, spans_of, tokenize

TYPES = ("PER", "ORG", "LOC", "MISC")


def test_tokenize_keeps_offsets_and_splits_punctuation():
    text = "Mr. O'Neil visited New York, (again)."
    tokens, offsets = tokenize(text)
    assert tokens == ["Mr", ".", "O'Neil", "visited", "New", "York", ",", "(", "again", ")", "."]
    assert all(text[a:b] == t for t, (a, b) in zip(tokens, offsets))


def test_spans_align_across_punctuation_and_case():
    tokens = ["U.S.", "officials", "met", "in", "new", "york", ",", "said", "Smith", "."]
    tags, stats = align_spans(tokens, [("U.S.", "LOC"), ("New York", "LOC"), ("Smith", "PER")], TYPES)
    assert tags == ["B-LOC", "O", "O", "O", "B-LOC", "I-LOC", "O", "O", "B-PER", "O"]
    assert stats.placed == 3 and not stats.dropped
    tags, _ = align_spans(["the", "U.S", ".", "team"], [("U.S.", "LOC")], TYPES)  # split differently
    assert tags == ["O", "B-LOC", "I-LOC", "O"]


def test_repeated_words_tag_every_occurrence_and_longest_span_wins():
    tokens = "Paris beat Paris Saint Germain in Paris".split()
    tags, stats = align_spans(tokens, [("Paris", "LOC"), ("Paris Saint Germain", "ORG")], TYPES)
    assert tags == ["B-LOC", "O", "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"]
    assert stats.placed == 2


def test_unknown_spans_and_types_are_dropped_and_counted():
    tokens = "Obama spoke in Berlin".split()
    spans = [("Obama", "PER"), ("Merkel", "PER"), ("Berlin", "CITY"), ("", "LOC"), ("Berl", "LOC")]
    tags, stats = align_spans(tokens, spans, TYPES)
    assert tags == ["B-PER", "O", "O", "O"]  # "Berl" is not a whole token
    assert stats.dropped["not in sentence"] == 2
    assert stats.dropped["unknown type"] == 1 and stats.dropped["empty span"] == 1


def test_overlapping_span_is_dropped():
    tokens = "Bank of America Tower".split()
    tags, stats = align_spans(tokens, [("Bank of America", "ORG"), ("America Tower", "LOC")], TYPES)
    assert tags == ["B-ORG", "I-ORG", "I-ORG", "O"]
    assert stats.dropped["overlaps another entity"] == 1


def test_bio_validity_and_entity_extraction():
    assert is_valid_bio(["B-PER", "I-PER", "O", "B-LOC"])
    assert not is_valid_bio(["O", "I-PER"]) and not is_valid_bio(["B-PER", "I-LOC"]) and not is_valid_bio(["X"])
    assert entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]) == [(0, 2, "PER"), (3, 4, "LOC"), (4, 5, "LOC")]
    assert spans_of(["Ada", "Lovelace", "wrote"], ["B-PER", "I-PER", "O"]) == [("Ada Lovelace", "PER")]


def test_entity_scores_are_exact_match():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-ORG", "O"]]  # a truncated PER span is wrong
    s = entity_scores(gold, pred)
    assert (s["gold_entities"], s["predicted_entities"]) == (3, 3)
    assert abs(s["precision"] - 2 / 3) < 1e-9 and abs(s["recall"] - 2 / 3) < 1e-9 and abs(s["f1"] - 2 / 3) < 1e-9


def test_every_alignment_is_valid_bio():
    import random

    rng = random.Random(0)
    words = "the bank of new york and paris met john smith in new york".split()
    for _ in range(200):
        tokens = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        spans = [(" ".join(rng.sample(words, rng.randint(1, 3))), rng.choice(TYPES + ("BAD",))) for _ in range(4)]
        spans += [(" ".join(tokens[i : i + 2]), rng.choice(TYPES)) for i in range(0, len(tokens), 3)]
        tags, _ = align_spans(tokens, spans, TYPES)
        assert len(tags) == len(tokens) and is_valid_bio(tags)


def test_entity_prompt_shows_demos_as_the_json_asked_for_and_ends_with_the_sentence():
    import json

    from freeal_ray.prompts import entity_prompt
    from freeal_ray.task import ENTITY_PRESETS

    task = ENTITY_PRESETS["conll03"]
    demo = (["Peter", "Blackburn", "met", "EU", "staff"], [("Peter Blackburn", "PER"), ("EU", "ORG")])
    prompt = entity_prompt(task, [demo], ["Obama", "spoke"])
    assert "- MISC: nationalities" in prompt and prompt.endswith("Sentence: Obama spoke\nEntities:")
    shown = prompt.split("Entities: ")[1].split("\n")[0]
    assert json.loads(shown) == {"entities": [{"text": "Peter Blackburn", "type": "PER"}, {"text": "EU", "type": "ORG"}]}
    assert task.tags[0] == "O" and set(task.tags[1:]) == {f"{p}-{t}" for t in TYPES for p in "BI"}


def test_answers_that_are_not_the_schema_parse_to_none():
    from freeal_ray.prompts import parse_entities

    assert parse_entities('{"entities": [{"text": "EU", "type": "ORG"}]}') == [("EU", "ORG")]
    assert parse_entities('{"entities": []}') == []
    for junk in ('{"entities": [{"text": "E', "EU is an ORG", '{"entities": [{"type": "ORG"}]}', '{"people": []}', "[1, 2]"):
        assert parse_entities(junk) is None, junk
