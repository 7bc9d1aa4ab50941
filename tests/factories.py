"""factory_boy factories for tests: users with roles, projects, prompts, demonstrations."""
import factory
from django.contrib.auth import get_user_model

from labeling.models import Candidate, Demonstration, Project, Prompt, Source
from labeling.services import prompt_content_hash
from studio.roles import ANNOTATOR
from studio.services import user_set_role

PASSWORD = "correct-horse-battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        self.save()
        if create:
            user_set_role(user=self, role=extracted or ANNOTATOR)


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")
    guidelines = "Rank by **helpfulness**, then honesty."


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    kind = Prompt.Kind.INSTRUCTION
    messages = factory.Sequence(lambda n: [{"role": "user", "content": f"Explain idea number {n}."}])
    documents = factory.LazyFunction(list)
    created_by = factory.SubFactory(UserFactory)
    content_hash = factory.LazyAttribute(lambda o: prompt_content_hash(messages=o.messages, documents=o.documents))


class DemonstrationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Demonstration

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"An ideal answer {n}.")
    author = factory.SubFactory(UserFactory)


class CandidateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Candidate

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"A candidate answer {n}.")
    source = Source.IMPORTED


class DatasetSnapshotFactory(factory.django.DjangoModelFactory):
    """A snapshot row with a given hash and no file: for registry and lineage tests that only
    need a snapshot to point at (the training tests make real snapshots)."""

    class Meta:
        model = "training.DatasetSnapshot"
        django_get_or_create = ("sha256",)

    project = factory.SubFactory(ProjectFactory)
    sha256 = factory.Sequence(lambda n: f"{n:064x}")
    path = factory.LazyAttribute(lambda o: f"snapshots/{o.sha256}.jsonl")
