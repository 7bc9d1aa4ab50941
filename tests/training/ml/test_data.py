"""Examples from snapshot rows: what is a target, what truncation keeps, which pairs are made."""
from __future__ import annotations

from training.ml.prompting import encode_prompt, encode_response, end_of_turn_id, render_chat
from training.ml import data as D


def chat_row(messages, candidates=(), consensus=None, rankings=(), demonstrations=(), split="train", **extra):
    return {"prompt_id": 1, "messages": messages, "documents": [], "split": split, "source": "written",
            "source_format": "", "candidates": list(candidates), "rankings": list(rankings),
            "consensus": consensus, "demonstrations": list(demonstrations), **extra}


LONG_TALK = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "first question " * 20},
    {"role": "assistant", "content": "first answer " * 20},
    {"role": "user", "content": "second question " * 5},
    {"role": "assistant", "content": "second answer " * 5},
    {"role": "user", "content": "What is the capital of France?"},
]


def test_fit_prompt_drops_the_oldest_turns_first_and_keeps_system_and_question(tokenizer):
    chat = render_chat(LONG_TALK)
    whole = encode_prompt(tokenizer, chat)
    without_first = encode_prompt(tokenizer, [chat[0], *chat[3:]])
    ids, cut = D.fit_prompt(tokenizer, chat, len(without_first))
    assert cut and len(whole) > len(without_first)
    assert ids == without_first  # the first exchange went, whole; the system and the last turns stayed
    text = tokenizer.decode(ids)
    assert "Be brief." in text and "capital of France" in text and "first question" not in text


def test_fit_prompt_cuts_from_the_left_when_the_question_alone_is_too_long(tokenizer):
    chat = render_chat([{"role": "user", "content": "padding words " * 50 + "What is the capital of France?"}])
    ids, cut = D.fit_prompt(tokenizer, chat, 20)
    assert cut and len(ids) == 20
    assert ids == encode_prompt(tokenizer, chat)[-20:]  # the end, where the question is, stays
    assert D.fit_prompt(tokenizer, chat, 10_000) == (encode_prompt(tokenizer, chat), False)


def test_sft_example_targets_only_the_answer_and_its_end_of_turn_token(tokenizer):
    row = chat_row(LONG_TALK, demonstrations=[{"id": 1, "text": "Paris."}])
    (example,), stats = D.sft_examples([row], tokenizer, split="train", max_length=4096, max_response_tokens=64)
    prompt = encode_prompt(tokenizer, render_chat(LONG_TALK))
    assert list(example.input_ids[:example.answer_start]) == prompt  # system, earlier turns: context only
    answer = list(example.input_ids[example.answer_start:])
    assert answer == encode_response(tokenizer, "Paris.") and answer[-1] == end_of_turn_id(tokenizer)
    assert stats.examples == 1 and stats.truncated_prompts == 0


def test_sft_keeps_the_answer_whole_and_cuts_the_prompt(tokenizer):
    answer_ids = encode_response(tokenizer, "Paris is the capital.")
    row = chat_row(LONG_TALK, demonstrations=[{"id": 1, "text": "Paris is the capital."}])
    (example,), stats = D.sft_examples([row], tokenizer, split="train", max_length=len(answer_ids) + 30,
                                       max_response_tokens=64)
    assert example.length <= len(answer_ids) + 30
    assert list(example.input_ids[example.answer_start:]) == answer_ids
    assert stats.truncated_prompts == 1


def test_splits_are_kept_apart(tokenizer):
    rows = [chat_row([{"role": "user", "content": "hi"}], demonstrations=[{"id": 1, "text": "a"}], split=s)
            for s in ("train", "validation", "train")]
    assert len(D.sft_examples(rows, tokenizer, split="train", max_length=64, max_response_tokens=8)[0]) == 2
    assert len(D.sft_examples(rows, tokenizer, split="validation", max_length=64, max_response_tokens=8)[0]) == 1
    assert len(D.sft_examples(rows, tokenizer, split="all", max_length=64, max_response_tokens=8)[0]) == 3


CANDIDATES = [{"id": 1, "text": "Paris."}, {"id": 2, "text": "Rome."}, {"id": 3, "text": "Lyon."},
              {"id": 4, "text": "Bananas."}]


def test_reward_group_has_every_untied_pair_of_the_consensus(tokenizer):
    row = chat_row([{"role": "user", "content": "Capital of France?"}], CANDIDATES,
                   consensus={"ranking": [[1], [2, 3], [4]], "labels": [9]},
                   rankings=[{"id": 9, "ranking": [[1], [2, 3], [4]], "ratings": {"1": 7, "2": 4, "3": 3, "4": 1}}])
    (group,), stats = D.reward_groups([row], tokenizer, split="train", max_length=256, max_response_tokens=32)
    pairs = {(group.candidate_ids[i], group.candidate_ids[j]) for i, j, _ in group.pairs}
    assert pairs == {(1, 2), (1, 3), (1, 4), (2, 4), (3, 4)}  # 6 pairs minus the tie (2, 3)
    assert all(m == 0.0 for _, _, m in group.pairs) and stats.pairs == 5
    (with_margin,), _ = D.reward_groups([row], tokenizer, split="train", max_length=256, max_response_tokens=32,
                                        use_rating_margin=True, margin_scale=0.5)
    margins = {(with_margin.candidate_ids[i], with_margin.candidate_ids[j]): m for i, j, m in with_margin.pairs}
    assert margins[(1, 4)] == 3.0 and margins[(2, 4)] == 1.5  # (7 - 1) * 0.5, (4 - 1) * 0.5


def test_reward_pairs_from_each_annotator(tokenizer):
    row = chat_row([{"role": "user", "content": "Capital of France?"}], CANDIDATES[:2],
                   consensus={"ranking": [[1], [2]], "labels": [9, 10]},
                   rankings=[{"id": 9, "ranking": [[1], [2]], "ratings": {}},
                             {"id": 10, "ranking": [[2], [1]], "ratings": {}}])
    (consensus,), _ = D.reward_groups([row], tokenizer, split="train", max_length=256, max_response_tokens=32)
    (each,), _ = D.reward_groups([row], tokenizer, split="train", max_length=256, max_response_tokens=32,
                                 labels="annotators")
    assert len(consensus.pairs) == 1 and len(each.pairs) == 2


def test_truncation_keeps_answers_whole_and_reports_pairs_that_became_identical(tokenizer):
    same_start = "The answer is Paris, the capital and largest city of France"
    candidates = [{"id": 1, "text": same_start + ", on the Seine."}, {"id": 2, "text": same_start + ", in Texas."},
                  {"id": 3, "text": "Bananas."}]
    row = chat_row([{"role": "user", "content": "long context " * 80 + "Capital of France?"}], candidates,
                   consensus={"ranking": [[1], [2], [3]], "labels": []})
    limit = len(encode_response(tokenizer, same_start)) - 1  # both long answers cut inside their shared start
    (group,), stats = D.reward_groups([row], tokenizer, split="train", max_length=limit + 40,
                                      max_response_tokens=limit)
    assert stats.identical_pairs == 1  # (1, 2): the same tokens once cut, not scored as a tie
    assert {(group.candidate_ids[i], group.candidate_ids[j]) for i, j, _ in group.pairs} == {(1, 3), (2, 3)}
    assert stats.truncated_responses == 2 and stats.truncated_prompts == 1
    assert group.responses[2] == tuple(encode_response(tokenizer, "Bananas."))  # short answers stay whole
    assert group.longest <= limit + 40  # no pair dropped for being long: the prompt gave way


def test_a_prompt_without_untied_pairs_makes_no_group(tokenizer):
    tie = chat_row([{"role": "user", "content": "?"}], CANDIDATES[:2], consensus={"ranking": [[1, 2]], "labels": []})
    unranked = chat_row([{"role": "user", "content": "?"}], CANDIDATES[:2])
    groups, stats = D.reward_groups([tie, unranked], tokenizer, split="train", max_length=64, max_response_tokens=8)
    assert groups == [] and stats.prompts == 2


def test_step_plan_is_a_deterministic_shuffle_of_every_example():
    plan = D.step_plan(10, per_step=4, seed=3, epoch=1)
    assert [len(s) for s in plan] == [4, 4, 2]
    assert sorted(i for s in plan for i in s) == list(range(10))
    assert plan == D.step_plan(10, per_step=4, seed=3, epoch=1)
    assert plan != D.step_plan(10, per_step=4, seed=3, epoch=2)


def test_microbatches_respect_the_token_budget_and_group_similar_lengths():
    lengths = [100, 10, 90, 12, 300, 11]
    groups = D.microbatches(lengths, 200)
    assert sorted(i for g in groups for i in g) == list(range(6))
    for g in groups:
        assert max(lengths[i] for i in g) * len(g) <= 200 or len(g) == 1
    assert [1, 5, 3] in groups  # the three short ones together
    assert [4] in groups  # longer than the budget: alone


def test_length_grouped_steps_pad_less_and_still_cover_every_example_once():
    import random

    rng = random.Random(0)
    lengths = [rng.randint(10, 500) for _ in range(400)]
    plain = D.step_plan(400, per_step=8, seed=1, epoch=0)
    grouped = D.step_plan(400, per_step=8, seed=1, epoch=0, lengths=lengths)
    assert sorted(i for s in grouped for i in s) == list(range(400))
    assert grouped == D.step_plan(400, per_step=8, seed=1, epoch=0, lengths=lengths)  # deterministic

    def padding(plan):
        return sum(max(lengths[i] for i in s) * len(s) - sum(lengths[i] for i in s) for s in plan)

    assert padding(grouped) < 0.2 * padding(plain)
    # Steps are not in length order: short and long steps are mixed through the epoch.
    longest = [max(lengths[i] for i in s) for s in grouped]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)
