"""An Ollama `Modelfile` for an exported GGUF: the model's chat template, its trained system
prompt and the trained prefill after the assistant header, greedy decoding, eos as stop.

Ollama's TEMPLATE is a Go template, not Jinja, so the chat template cannot be copied over. It is
measured instead: rendered with marker strings for one system, user and assistant turn, it
yields the text around each turn (`ChatPieces`). Those pieces are checked by rendering a longer
conversation both ways; a template that does not build its prompt turn by turn this way is one
`error:` line rather than a Modelfile that prompts the model differently from training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from smolgrpo.errors import SmolGRPOError
from smolgrpo.tasks.prompts import PromptTemplate

MODELFILE_NAME = "Modelfile"
_SYSTEM, _USER, _ASSISTANT, _USER_2 = "\x01S\x01", "\x01U\x01", "\x01A\x01", "\x01V\x01"


@dataclass(frozen=True)
class ChatPieces:
    """The text a chat template puts around each turn (`{prefix}content{suffix}`)."""

    system_prefix: str
    system_suffix: str
    user_prefix: str
    user_suffix: str
    assistant_prefix: str
    assistant_suffix: str
    generation_prompt: str  # after the last user turn, before the model writes

    def render(self, system: str, turns: list[tuple[str, str]]) -> str:
        """The prompt these pieces give (as the Modelfile's TEMPLATE renders it)."""
        text = self.system_prefix + system + self.system_suffix
        for role, content in turns:
            if role == "user":
                text += self.user_prefix + content + self.user_suffix
            else:
                text += self.assistant_prefix + content + self.assistant_suffix
        return text + self.generation_prompt


def _render(tokenizer, turns: list[tuple[str, str]], generation: bool = False) -> str:
    messages = [{"role": role, "content": content} for role, content in turns]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def _after(text: str, start: str) -> str:
    if not text.startswith(start):
        raise SmolGRPOError(
            "chat template: a turn changes the text before it, so it cannot become an Ollama "
            "TEMPLATE (export without --ollama)"
        )
    return text[len(start) :]


def chat_pieces(tokenizer) -> ChatPieces:
    """The pieces of `tokenizer.chat_template`, checked on a two-exchange conversation."""
    system = [("system", _SYSTEM)]
    exchange = system + [("user", _USER)]
    try:
        system_text = _render(tokenizer, system)
        exchange_text = _render(tokenizer, exchange)
        answered_text = _render(tokenizer, exchange + [("assistant", _ASSISTANT)])
        prompt_text = _render(tokenizer, exchange, generation=True)
        longer = exchange + [("assistant", _ASSISTANT), ("user", _USER_2)]
        longer_text = _render(tokenizer, longer, generation=True)
    except Exception as error:  # a template may raise on a role it does not know
        raise SmolGRPOError(f"chat template: cannot render a chat ({error})") from None
    user_turn = _after(exchange_text, system_text)
    assistant_turn = _after(answered_text, exchange_text)
    if system_text.count(_SYSTEM) != 1 or user_turn.count(_USER) != 1:
        raise SmolGRPOError("chat template: the system or user message is not shown once")
    if assistant_turn.count(_ASSISTANT) != 1:
        raise SmolGRPOError("chat template: the assistant message is not shown once")
    pieces = ChatPieces(
        *system_text.split(_SYSTEM),
        *user_turn.split(_USER),
        *assistant_turn.split(_ASSISTANT),
        generation_prompt=_after(prompt_text, exchange_text),
    )
    turns = [("user", _USER), ("assistant", _ASSISTANT), ("user", _USER_2)]
    if pieces.render(_SYSTEM, turns) != longer_text:
        raise SmolGRPOError(
            "chat template: a conversation of several turns renders differently from its "
            "turns one by one, so it cannot become an Ollama TEMPLATE (export without --ollama)"
        )
    return pieces


def _go_literal(text: str) -> str:
    """Text placed in a Go template as is ("{{" would open an action)."""
    return text.replace("{{", '{{ "{{" }}')


def _triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise SmolGRPOError(f'{what} holds """, which a Modelfile cannot quote')
    return f'"""{text}"""'


def ollama_template(pieces: ChatPieces, prefill: str) -> str:
    """A Go TEMPLATE rendering Ollama's System and Messages as the chat template does, with
    the trained prefill after the assistant header of the turn the model writes."""
    p = {name: _go_literal(value) for name, value in vars(pieces).items()}
    return (
        f"{{{{ if .System }}}}{p['system_prefix']}{{{{ .System }}}}{p['system_suffix']}{{{{ end }}}}"
        "{{ range $i, $_ := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}"
        f'{{{{ if eq .Role "user" }}}}{p["user_prefix"]}{{{{ .Content }}}}{p["user_suffix"]}'
        f"{{{{ if $last }}}}{p['generation_prompt']}{_go_literal(prefill)}{{{{ end }}}}"
        f'{{{{ else if eq .Role "assistant" }}}}{p["assistant_prefix"]}{{{{ .Content }}}}'
        f"{{{{ if not $last }}}}{p['assistant_suffix']}{{{{ end }}}}"
        "{{ end }}{{ end }}"
    )


def modelfile_text(
    gguf_name: str, pieces: ChatPieces, template: PromptTemplate, stop_tokens: list[str]
) -> str:
    lines = [
        f"FROM ./{gguf_name}",
        f"TEMPLATE {_triple_quoted(ollama_template(pieces, template.prefill), 'the template')}",
        f"SYSTEM {_triple_quoted(template.system_prompt, 'the system prompt')}",
    ]
    for token in stop_tokens:
        if '"' in token:
            raise SmolGRPOError(f"stop token {token!r} holds a double quote")
        lines.append(f'PARAMETER stop "{token}"')
    lines.append("PARAMETER temperature 0")
    if template.num_few_shot:
        lines.insert(1, f"# trained with {template.num_few_shot} few-shot example(s), not included")
    return "\n".join(lines) + "\n"


def stop_tokens(model, tokenizer) -> list[str]:
    """The text of every eos token of the model's generation config and of the tokenizer."""
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
    ids.append(tokenizer.eos_token_id)
    tokens = [tokenizer.convert_ids_to_tokens(i) for i in dict.fromkeys(ids) if i is not None]
    return [token for token in tokens if token]


def modelfile_for(gguf_path: Path, model, tokenizer, template: PromptTemplate) -> str:
    """The Modelfile's text for a GGUF written beside it (checked before the GGUF is written)."""
    pieces = chat_pieces(tokenizer)
    return modelfile_text(Path(gguf_path).name, pieces, template, stop_tokens(model, tokenizer))
