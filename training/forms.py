"""The snapshot form of the snapshots page (filters and split); the service validates again."""
from __future__ import annotations

from django import forms


class SnapshotForm(forms.Form):
    created_from = forms.DateField(required=False, label="Labels from",
                                   widget=forms.DateInput(attrs={"type": "date"}),
                                   help_text="Rankings and demonstrations made on or after this day.")
    created_to = forms.DateField(required=False, label="Labels until",
                                 widget=forms.DateInput(attrs={"type": "date"}),
                                 help_text="Up to and including this day.")
    min_agreement = forms.FloatField(required=False, min_value=0, max_value=1, label="Minimum agreement",
                                     widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "e.g. 0.6"}),
                                     help_text="Keep a prompt's rankings only when its annotators agree on at least "
                                               "this share of candidate pairs (prompts ranked once are dropped).")
    exclude_flagged_candidates = forms.BooleanField(required=False, label="Leave out candidates the safety screen "
                                                                          "flagged")
    exclude_flagged_labels = forms.BooleanField(required=False, label="Leave out rankings that flag a candidate or "
                                                                      "mark all answers bad")
    exclude_imported = forms.BooleanField(required=False, label="Leave out imported data")
    validation_fraction = forms.FloatField(initial=0.1, min_value=0, max_value=0.9, label="Validation share",
                                           widget=forms.NumberInput(attrs={"step": "0.05"}),
                                           help_text="Share of prompts in the validation split (by prompt, "
                                                     "deterministic).")
    split_seed = forms.IntegerField(initial=0, label="Split seed", help_text="Another seed draws another split.")

    def spec_input(self) -> dict:
        data = dict(self.cleaned_data)
        if data.get("validation_fraction") is None:
            data.pop("validation_fraction", None)
        if data.get("split_seed") is None:
            data.pop("split_seed", None)
        return data


class TrainingRunForm(forms.Form):
    """The "Start a training run" form. The choices shown are what makes sense for the project
    (language models of this project or imported; its snapshots, newest first), but the field
    accepts any model id so that the service, not the form, says why a model cannot be a base
    (a reward model, another project's model): its message is the one a user can act on."""

    kind = forms.ChoiceField(choices=[("sft", "Supervised fine-tuning (SFT) — learns from demonstrations"),
                                      ("reward", "Reward model — learns from rankings"),
                                      ("dpo", "DPO — the policy learns from rankings directly, no reward model"),
                                      ("ppo", "PPO — the policy learns from a reward model's scores of its own answers"),
                                      ("best_of_n", "Best-of-n — fine-tunes on the reward model's favourite of n answers")],
                             initial="reward", label="Kind")
    base_model = forms.ModelChoiceField(queryset=None, empty_label=None, label="Base model",
                                        help_text="The language model to start from: the base, or an SFT model of "
                                                  "this project. Imported models serve every project.")
    reward_model = forms.ModelChoiceField(queryset=None, required=False, empty_label="None (no win-rate evaluation)",
                                          label="Reward model (PPO, best-of-n: required; DPO: optional)",
                                          help_text="PPO and best-of-n learn from its scores. Both judge the trained policy "
                                                    "against the model it started from on held-out prompts: its win "
                                                    "rate, with its interval, and the KL it cost.")
    snapshot = forms.ModelChoiceField(queryset=None, empty_label=None, to_field_name="sha256", label="Snapshot",
                                      help_text="The frozen labels it learns from; its validation split measures it.")
    config = forms.CharField(required=False, label="Config (JSON)",
                             widget=forms.Textarea(attrs={"rows": 18, "spellcheck": "false", "class": "code-input"}),
                             help_text="Every setting with its default; change what you need. Missing fields take "
                                       "their defaults.")

    def __init__(self, *args, base_models, snapshots, reward_models=(), **kwargs):
        from modelhub.models import ModelArtifact

        super().__init__(*args, **kwargs)
        self.fields["base_model"].queryset = ModelArtifact.objects.all()
        self.fields["reward_model"].queryset = ModelArtifact.objects.all()
        self.fields["reward_model"].widget.choices = [("", self.fields["reward_model"].empty_label)] + [
            (m.pk, self.model_label(m)) for m in reward_models]
        # Shown: only the models that can be a base here (the field still resolves any id).
        self.fields["base_model"].widget.choices = [(m.pk, self.model_label(m)) for m in base_models]
        self.fields["snapshot"].queryset = snapshots
        self.fields["snapshot"].label_from_instance = self.snapshot_label

    @staticmethod
    def model_label(model) -> str:
        where = "this project" if model.project_id else "imported"
        return f"{model.name} · {model.get_kind_display()} · {where}"

    @staticmethod
    def snapshot_label(snapshot) -> str:
        counts = snapshot.counts or {}
        return (f"{snapshot.short_hash} · {snapshot.created_at:%Y-%m-%d %H:%M} · {counts.get('prompts', 0)} prompts, "
                f"{counts.get('rankings', 0)} ranked, {counts.get('demonstrations', 0)} demos")

    def clean_config(self) -> dict:
        import json

        raw = (self.cleaned_data.get("config") or "").strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).")
        if not isinstance(value, dict):
            raise forms.ValidationError('The config must be a JSON object of settings, e.g. {"epochs": 2}.')
        return value
