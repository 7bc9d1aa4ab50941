"""The page form for starting a generation job (the API takes the same fields as JSON)."""
from __future__ import annotations

import re

from django import forms

from modelhub.models import ModelArtifact


class GenerationJobForm(forms.Form):
    model = forms.ModelChoiceField(queryset=ModelArtifact.objects.none(), empty_label=None,
                                   help_text="The model that writes the candidates.")
    k = forms.IntegerField(min_value=1, max_value=9, label="Candidates per prompt (K)")
    prompts = forms.ChoiceField(choices=[("missing", "Every prompt without candidates"),
                                         ("chosen", "Only the prompt ids below")],
                                widget=forms.RadioSelect, initial="missing")
    prompt_ids = forms.CharField(required=False, label="Prompt ids",
                                 help_text="Comma- or space-separated, e.g. 12, 13, 20.")

    def __init__(self, *args, models=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = models if models is not None else ModelArtifact.objects.exclude(
            kind=ModelArtifact.Kind.REWARD)

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("prompts") == "chosen":
            raw = cleaned.get("prompt_ids", "")
            parts = [p for p in re.split(r"[\s,]+", raw.strip()) if p]
            if not parts:
                self.add_error("prompt_ids", "Give at least one prompt id.")
            elif not all(p.isdigit() for p in parts):
                self.add_error("prompt_ids", "Prompt ids are whole numbers.")
            else:
                cleaned["prompt_id_list"] = [int(p) for p in parts]
        else:
            cleaned["prompt_id_list"] = None
        return cleaned


class ModelEvaluationForm(forms.Form):
    """The model page's "Evaluate" form (admins): a reward model on a snapshot's split."""

    snapshot = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="sha256", label="Snapshot")
    split = forms.ChoiceField(label="Split", initial="validation", choices=[
        ("validation", "Validation split"), ("train", "Training split"), ("all", "All prompts")])

    def __init__(self, *args, snapshots, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = lambda s: (
            f"{s.short_hash} · {s.project.name} · {s.created_at:%Y-%m-%d %H:%M} · "
            f"{(s.counts or {}).get('consensus_pairs', 0)} pairs")
