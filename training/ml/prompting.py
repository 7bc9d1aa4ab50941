"""The one prompt renderer: how a prompt (system instruction, turns, reference documents) becomes
model input. Generation samples from it, training (SFT, reward model) trains on it, and the
exports write it, so a model always learns from exactly the text it was sampled from.

Pure Python over plain dicts (no Django, no torch): `training.ml` and the exports import it.

    render_chat(messages, documents, template)  -> chat messages: system (custom instructions, then
                                                   the documents block), the turns, the template's
                                                   instruction appended to the last user turn
    render_transcript(chat)                      -> the same as one text ("Human: …\\n\\nAssistant:"),
                                                   for tokenizers without a chat template and text exports
    encode_prompt(tokenizer, chat)               -> token ids with the generation prompt
    encode_response(tokenizer, text)             -> an answer's token ids, ending with the end-of-turn token
"""
from __future__ import annotations

from collections.abc import Sequence

# Prompt templates (strategies): an instruction appended to the question the model answers.
# "plain" leaves the prompt as written. New strategies are added here and recorded by name on
# every candidate, so their human win rates can be compared later.
PROMPT_TEMPLATES: dict[str, str] = {
    "plain": "",
    "step_by_step": "Think step by step.",
    "concise": "Answer concisely.",
    "detailed": "Give a detailed, well-structured answer.",
    "cite_documents": "Answer using only the reference documents, and say which one supports each claim.",
}

# Speaker names of the text transcript: the Anthropic HH convention, which TRL's "standard"
# (string) datasets and the jsonl importer's "chosen"/"rejected" dialogues use.
TRANSCRIPT_NAMES = {"system": "System", "user": "Human", "assistant": "Assistant"}


def documents_block(documents: Sequence[dict]) -> str:
    """Reference documents as a numbered block the model can cite: "[1] Title\\ntext"."""
    parts = []
    for index, doc in enumerate(documents, start=1):
        title = (doc.get("title") or "").strip()
        text = (doc.get("text") or "").strip()
        parts.append(f"[{index}] {title}\n{text}" if title else f"[{index}] {text}")
    return "Reference documents:\n\n" + "\n\n".join(parts)


def render_chat(messages: Sequence[dict], documents: Sequence[dict] = (), template: str = "plain") -> list[dict]:
    """Chat messages for a prompt: its system instruction (custom instructions), then its turns
    (few-shot examples and conversation history are already user/assistant turns), with
    reference documents added to the system context and the template's instruction appended to
    the last user turn. Only "role" and "content" are kept."""
    if template not in PROMPT_TEMPLATES:
        raise ValueError(f"Unknown prompt template {template!r}; known: {', '.join(sorted(PROMPT_TEMPLATES))}.")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    has_system = bool(messages) and messages[0]["role"] == "system"
    system = messages[0]["content"] if has_system else ""
    turns = messages[1:] if has_system else messages
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("The prompt must end with a user turn.")
    if documents:
        docs = documents_block(documents)
        system = f"{system}\n\n{docs}" if system else docs
    instruction = PROMPT_TEMPLATES[template]
    if instruction:
        turns = [*turns[:-1], {"role": "user", "content": f"{turns[-1]['content']}\n\n{instruction}"}]
    return ([{"role": "system", "content": system}] if system else []) + turns


def render_transcript(chat: Sequence[dict]) -> str:
    """A chat as one text, "Human: …\\n\\nAssistant: …", ending with "Assistant:" so that
    transcript + " " + answer reads as the conversation."""
    lines = [f"{TRANSCRIPT_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in chat]
    return "\n\n".join(lines) + "\n\nAssistant:"


def encode_prompt(tokenizer, chat: Sequence[dict]) -> list[int]:
    """Token ids of `chat` with the generation prompt, via the tokenizer's chat template (the
    transcript when it has none). A template that rejects the system role gets the system text
    merged into the first user turn."""
    if not getattr(tokenizer, "chat_template", None):
        return list(tokenizer(render_transcript(chat), add_special_tokens=True)["input_ids"])
    try:
        ids = tokenizer.apply_chat_template(list(chat), add_generation_prompt=True, tokenize=True, return_dict=False)
    except Exception:
        if not chat or chat[0]["role"] != "system":
            raise
        merged = [{"role": "user", "content": f"{chat[0]['content']}\n\n{chat[1]['content']}"}, *chat[2:]]
        ids = tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def end_of_turn_id(tokenizer) -> int | None:
    """The token a model emits to end its answer: the chat format's end-of-turn marker when the
    tokenizer has one, else EOS. Generation stops on it; training appends it to every answer."""
    vocab = tokenizer.get_vocab()
    if getattr(tokenizer, "chat_template", None):
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
            if token in vocab and token in tokenizer.chat_template:
                return vocab[token]
    return tokenizer.eos_token_id


def encode_response(tokenizer, text: str) -> list[int]:
    """An answer's token ids as the model writes them after `encode_prompt`: the text, then the
    end-of-turn token (so a model learns to stop, and a reward model sees where the answer ends)."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    end = end_of_turn_id(tokenizer)
    return ids + ([end] if end is not None else [])
