"""Hand-built labels for the snapshot and export tests: every id, rating and flag is known, so
the tests can say exactly which rows an export must hold."""
from __future__ import annotations

from dataclasses import dataclass, field

from labeling.models import Candidate, Demonstration, Project, Prompt, Ranking, Source
from labeling.services import prompt_content_hash
from tests.factories import ProjectFactory


def make_prompt(project: Project, text: str, *, messages=None, documents=None, source=Source.WRITTEN,
                source_format="", external_id="", user=None) -> Prompt:
    messages = messages or [{"role": "user", "content": text}]
    documents = documents or []
    return Prompt.objects.create(project=project, messages=messages, documents=documents, source=source,
                                 source_format=source_format, external_id=external_id, created_by=user,
                                 content_hash=prompt_content_hash(messages=messages, documents=documents))


def make_candidates(prompt: Prompt, texts, **fields) -> list[Candidate]:
    return [Candidate.objects.create(prompt=prompt, text=text, source=Source.GENERATED,
                                     generation={"temperature": 0.7, "seed": i, "strategy": "plain"}, **fields)
            for i, text in enumerate(texts)]


def rank(prompt: Prompt, annotator, groups, *, ratings=None, flags=None, shown_order=None, source=Source.WRITTEN,
         all_bad=False, comment="") -> Ranking:
    ids = [c for g in groups for c in g]
    return Ranking.objects.create(prompt=prompt, annotator=annotator, ranking=groups,
                                  shown_order=shown_order or sorted(ids),
                                  ratings={str(k): v for k, v in (ratings or {}).items()},
                                  flags={str(k): v for k, v in (flags or {}).items()},
                                  source=source, all_bad=all_bad, comment=comment)


@dataclass
class Labelled:
    project: Project
    admin: object
    annotator: object
    prompt: Prompt
    a: int
    b: int
    c: int
    d: int
    texts: dict = field(default_factory=dict)
    ranking: Ranking | None = None
    demonstration: Demonstration | None = None


def build_labelled_project(make_user) -> Labelled:
    project = ProjectFactory(overlap=1)
    admin = make_user("admin")
    annotator = make_user("annotator")
    prompt = make_prompt(project, "Name a primary colour.", user=annotator)
    cands = make_candidates(prompt, ["Red.", "Blue, or red.", "Yellow is one.", "Bananas."])
    a, b, c, d = (x.pk for x in cands)
    ranking = rank(prompt, annotator, [[a], [b, c], [d]], ratings={a: 7, b: 5, c: 5, d: 1},
                   flags={d: ["hallucination"]}, shown_order=[c, a, d, b])
    demonstration = Demonstration.objects.create(prompt=prompt, text="Red, blue and yellow are primary colours.",
                                                 author=annotator)
    return Labelled(project=project, admin=admin, annotator=annotator, prompt=prompt, a=a, b=b, c=c, d=d,
                    texts={x.pk: x.text for x in cands}, ranking=ranking, demonstration=demonstration)


MARKER = "step by step"


def build_marker_project(make_user, *, prompts: int = 40, seed: int = 0, validation_fraction: float = 0.2):
    """A project whose labels follow a rule a reward model can learn from the text: of each
    prompt's three candidates, the one ending in MARKER is ranked first and the other two tied
    below it; each prompt has a demonstration. Returns (project, snapshot, admin)."""
    import random

    from training.snapshots import snapshot_create, snapshot_spec_clean
    from tests.training.ml.conftest import WORDS

    rng = random.Random(seed)
    project = ProjectFactory(overlap=1)
    admin = make_user("admin")
    annotator = make_user("annotator")

    def phrase(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    for i in range(prompts):
        prompt = make_prompt(project, f"{phrase(6)} ({i})", user=annotator)
        texts = [f"{phrase(rng.randint(3, 6))} {MARKER}", phrase(rng.randint(4, 8)), phrase(rng.randint(4, 8))]
        rng.shuffle(texts)
        cands = make_candidates(prompt, texts)
        best = next(c.pk for c in cands if c.text.endswith(MARKER))
        rank(prompt, annotator, [[best], [c.pk for c in cands if c.pk != best]])
        Demonstration.objects.create(prompt=prompt, text=next(c.text for c in cands if c.pk == best), author=annotator)
    filters, split = snapshot_spec_clean({"validation_fraction": validation_fraction})
    snapshot, _ = snapshot_create(user=admin, project=project, filters=filters, split=split)
    return project, snapshot, admin
