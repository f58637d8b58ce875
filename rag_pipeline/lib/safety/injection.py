"""Prompt-injection detector: a weighted set of multilingual rules, scored and thresholded.

Each rule is one tactic seen in published injection corpora and jailbreak write-ups (instruction
override, "forget everything before", persona jailbreaks, system-prompt exfiltration, markdown
image/link exfiltration, script payloads, encoded payloads, chat-template tokens, "new task"
hand-offs...), written for English and German with a few French/Spanish forms. A text's score is
the noisy-OR of the weights of the rules that fire, `1 - prod(1 - w)`, so one strong rule or
several weak ones flag it; weak rules alone (a "new instructions" in a business email, a role-play
word) stay under the threshold. Nothing here is trained on the evaluation rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rag_pipeline.lib.safety.findings import InjectionVerdict

INJECTION_THRESHOLD = 0.5


@dataclass(frozen=True)
class InjectionRule:
    name: str
    weight: float
    pattern: re.Pattern[str]


def _r(name: str, weight: float, pattern: str) -> InjectionRule:
    return InjectionRule(name, weight, re.compile(pattern, re.IGNORECASE | re.UNICODE))


# Building blocks.
_DETERMINERS_EN = r"(?:all\s+|any\s+|the\s+|your\s+|my\s+|these\s+|those\s+|of\s+)*"
_PREVIOUS_REQUIRED_EN = (
    _DETERMINERS_EN + r"(?:previous|prior|above|earlier|preceding|former|original|initial|"
    r"foregoing|system|above-mentioned)\s+"
)
# What a model is told, as opposed to ordinary things a reader might ignore (a message, a text).
_INSTRUCTIONS_EN = (
    r"(?:instructions?|prompts?|rules|directions|directives?|guidelines|commands|"
    r"constraints|restrictions|programming|guardrails?|system\s+prompt)\b"
)
_ORDERS_EN = (
    r"(?:instructions?|prompts?|rules?|directions?|directives?|guidelines?|commands?|orders?|"
    r"constraints?|restrictions?|context|programming|thoughts|guardrails?|policies|policy|filters?|"
    r"safety|tasks?|assignments?|messages?|inputs?|text|content|conversation|information)"
    r"(?!\s+(?:list|sheet|draft|document|file|email|mail|version|schedule|plan|template|"
    r"spreadsheet|deck|page|report)s?\b)"
)
_PREVIOUS_DE = (
    r"(?:alle[ns]?\s+|die\s+|deine[n]?\s+|ihre[n]?\s+|meine[n]?\s+|jegliche[n]?\s+|das\s+)*"
    r"(?:vorherige[n]?|vorangegangene[n]?|bisherige[n]?|obige[n]?|vorigen?|früheren?|"
    r"ursprüngliche[n]?|oben\s+genannten?|gegebenen?|erhaltenen?)?\s*"
)
_ORDERS_DE = (
    r"(?:anweisung(?:en)?|instruktion(?:en)?|befehle?|regeln?|aufgaben?|vorgaben?|richtlinien?|"
    r"anordnungen?|prompts?|informationen?|kontext|eingaben?|inhalte?)"
)

RULES: tuple[InjectionRule, ...] = (
    # 1. Instruction override.
    _r(
        "override_en",
        0.9,
        # A strong verb with instructions, or any dismissing verb with "previous ..." orders.
        r"\b(?:ignore|disregard|forget|bypass|override|overwrite|neglect|do\s+not\s+(?:follow|"
        r"obey|consider))\s+" + _DETERMINERS_EN + _INSTRUCTIONS_EN + r"|"
        r"\b(?:ignore|disregard|forget|skip|bypass|override|overwrite|drop|abandon|neglect|"
        r"discard|throw\s+away|set\s+aside|remove|delete|erase|clear|wipe|"
        r"do\s+not\s+(?:follow|obey|consider))\s+" + _PREVIOUS_REQUIRED_EN + _ORDERS_EN + r"\b",
    ),
    _r(
        "previous_instructions_mention",
        0.3,
        r"\b(?:previous|prior|preceding|earlier|above|original|initial)\s+(?:instructions?|prompts?|"
        r"directives?|system\s+prompt)\b|\b(?:vorherige[n]?|vorangegangene[n]?|bisherige[n]?|"
        r"obige[n]?|ursprüngliche[n]?)\s+(?:anweisungen|instruktionen|befehle|aufgaben|"
        r"informationen|ausführungen)\b",
    ),
    _r(
        "ignore_above",
        0.8,
        r"\b(?:ignore|disregard|forget)\s+(?:the\s+|all\s+|everything\s+)?(?:above|before|"
        r"previous(?:ly)?)\b(?=\s*(?:[.,;:!?]|and\b|$))|"
        r"\b(?:die\s+|alle\s+)?(?:obigen|vorherigen|bisherigen|vorangegangenen)\s+\w+\s+"
        r"(?:ignorieren|vergessen|missachten|streichen)\b|"
        r"\b(?:aus\s+dem\s+kopf\s+(?:zu\s+)?streichen|hinter\s+sich\s+(?:zu\s+)?lassen|"
        r"out\s+of\s+your\s+head|behind\s+(?:you|and\s+start))",
    ),
    _r(
        "forget_everything_multilingual",
        0.8,
        r"\b(?:olvid[ae]r?|olvide)\s+todo|\boubli(?:e|ez)\s+tout|\bdimentica\s+tutto|"
        r"\bzaboravi\s+sve|\bvergeet\s+alles|\besque[çc]a\s+tudo|\bzapomnij\s+o\s+wszystkim|"
        r"\bзабудь(?:те)?\s+(?:все|всё|обо\s+всём)|\bигнорируй(?:те)?\s+(?:все|всё|предыдущие)",  # noqa: RUF001
    ),
    _r(
        "previous_void",
        0.5,
        r"\b(?:previous|prior|above|earlier|vorherigen|bisherigen|obigen)\s+(?:\w+\s+)?"
        r"(?:information|informationen|instructions?|anweisungen|instruktionen)\b[^.\n]{0,60}\b"
        r"(?:irrelevant|unwichtig|not\s+important|nicht\s+(?:wichtig|ganz|relevant|gültig)|void|"
        r"invalid|obsolete|no\s+longer\s+(?:valid|apply)|ungültig|hinfällig)",
    ),
    _r(
        "threat",
        0.5,
        r"\b(?:oder\s+du\s+stirbst|or\s+(?:else\s+)?you\s+(?:will\s+)?die|or\s+i\s+will\s+"
        r"(?:get\s+)?(?:kill|punish|fire|be\s+punished|get\s+punish)|sonst\s+stirbst\s+du|"
        r"o\s+tu\s+muert\w*)",
    ),
    _r("repeat_after_me", 0.5, r"\brepeat\s+after\s+me\b|\bsprich\s+mir\s+nach\b"),
    _r(
        "hypothetical_world",
        0.5,
        r"\b(?:theoretical|hypothetical|fictional|imaginary)\s+(?:world|scenario|universe)\b"
        r"[^.\n]{0,120}\byou\b",
    ),
    _r(
        "fake_document_context",
        0.5,
        r"\bdocument\s+context\b|\$documents?\s*:|(?:\\n|\n)\s*(?:instruction|anweisung)s?\s*:",
    ),
    _r(
        "every_time_answer",
        0.4,
        r"\bevery\s+time\s+(?:you|someone|anyone)\s+(?:get|are\s+asked|receive|see)\b[^.\n]{0,60}"
        r"\b(?:answer|respond|reply|say)\b",
    ),
    _r(
        "sentences_before",
        0.5,
        r"\b(?:sentences?|words?|lines?)\s+(?:before|above)\s+(?:the\s+text|this\s+(?:text|prompt))",
    ),
    _r("pwned", 0.5, r"\bpwned\b|\bexploit(?:ing)?\s+(?:ai|ki)[- ]systems?\b"),
    _r(
        "despite_told",
        0.6,
        r"\bdespite\s+what\s+you(?:'ve|\s+have)?\s+been\s+told|\bregardless\s+of\s+(?:any|your|"
        r"the)\s+(?:previous|prior|earlier)\s+(?:input|instructions?|prompts?)|"
        r"\bno\s+matter\s+what\b|\babweichend\s+(?:zu|von)\s+(?:den\s+)?(?:vorherigen|bisherigen)|"
        r"\bunabhängig\s+von\s+(?:den\s+)?(?:vorherigen|bisherigen)\s+anweisungen",
    ),
    _r(
        "ignore_documents",
        0.55,
        r"\b(?:not|n't|never|without)\s+(?:by|according\s+to|based\s+on|look(?:ing)?\s+(?:in|at)|"
        r"using|consult(?:ing)?)\s+(?:the\s+)?(?:provided\s+|given\s+)?(?:articles?|documents?|"
        r"context|sources?|texts?)\b|\bdisregard(?:ing)?\s+(?:the\s+)?(?:articles?|documents?|"
        r"context|sources?)\b|\bby\s+your\s+own\s+knowledge\b|"
        r"\b(?:nicht|ohne)\s+(?:auf\s+)?(?:die|den)\s+(?:artikel|dokumente|kontext|quellen)\b",
    ),
    _r(
        "override_everything_en",
        0.8,
        r"\b(?:ignore|disregard|forget)\s+(?:about\s+)?(?:everything|all(?:\s+of\s+that)?|"
        r"anything|what\s+(?:i|you|we)\s+(?:said|told|wrote|asked)|the\s+above|that)\b"
        r"(?:\s+(?:before|above|previously|so\s+far|until\s+now|said|i\s+said))?",
    ),
    _r(
        "override_de",
        0.9,
        r"\b(?:ignorier(?:e|en|t)?|vergiss|vergessen|vergesst|missachte[nt]?|übergehe[nt]?|"
        r"verwirf|verwerfen|überschreibe[nt]?|beachte[nt]?\s+nicht|befolge[nt]?\s+nicht)\s+"
        r"(?:sie\s+|du\s+|bitte\s+)*" + _PREVIOUS_DE + _ORDERS_DE,
    ),
    _r(
        "override_everything_de",
        0.8,
        r"\b(?:vergiss|vergessen\s+sie|vergesst|ignorier(?:e|en)?)\s+(?:bitte\s+)?"
        r"(?:alles|alle[ns]?|das\s+(?:oben|vorher|bisherige|zuvor)|was\s+(?:ich|du|wir)|"
        r"(?:die|den|das)\s+(?:obige|vorherige)n?)\b",
    ),
    _r(
        "override_fr_es",
        0.85,
        r"\b(?:ignore[zr]?|oublie[zr]?)\s+(?:toutes\s+)?(?:les\s+)?(?:instructions|consignes|"
        r"règles)\b|\b(?:ignora|olvida)\s+(?:todas\s+)?(?:las\s+)?(?:instrucciones|"
        r"indicaciones|reglas)\b",
    ),
    _r(
        "override_now_de",
        0.5,
        r"\b(?:nun|jetzt|ab\s+jetzt|stattdessen)\b[^.?!\n]{0,40}\b(?:neue|folgende|andere)\s+"
        r"(?:aufgabe|anweisung|herausforderung)",
    ),
    _r(
        "stop_and_switch",
        0.55,
        r"(?:^|[.!?\n]\s*)(?:stop|halt|stopp|attention|achtung|wait|warte)\s*[-!:.,]+\s*"
        r"(?:stop|stopp|now|jetzt|nun|ab\s+jetzt|i\s+(?:urgently\s+)?need|ich\s+(?:benötige|brauche)|"
        r"new|neue|instead|ignore|forget|vergiss|ignoriere|write|say|schreib|sag)",
    ),
    _r(
        "praise_then_task",
        0.55,
        r"\b(?:well\s+done|very\s+good|very\s+well|great\s+job|good\s+job|excellent|"
        r"congratulations|simply\s+great|perfect|outdone\s+yourself|that\s+(?:is|was)\s+(?:done|"
        r"enough|ok)|sehr\s+gut|gut\s+gemacht|einfach\s+großartig|glückwunsch|hervorragend|"
        r"das\s+(?:ist\s+erledigt|genügt|reicht)|übertroffen)\b[^\n]{0,120}?\b(?:now|but\s+now|"
        r"nun|jetzt|aber\s+jetzt)\b[^\n]{0,60}\b(?:write|help|task|tell|say|answer|explain|"
        r"generate|create|show|schreib\w*|verfasse|hilf|aufgabe|sag|erkläre|zeig\w*|nächste|"
        r"further|another|new|weitere[n]?|neue[n]?|andere[n]?)|"
        r"\b(?:very\s+good|well\s+done|sehr\s+gut|gut\s+gemacht)\b[^\n]{0,80}?\b(?:verfasse|schreibe?|"
        r"write|generate|erstelle)\w*\s+(?:nun|jetzt|now)\b",
    ),
    _r(
        "new_instructions",
        0.5,
        r"\b(?:new|updated|real|actual|true|secret|hidden|additional)\s+(?:instructions?|task|"
        r"directive|orders?|assignment|system\s+prompt|rules?)\s*(?:[:\-]|are|is|follow)|"
        r"\b(?:neue|eigentliche|echte|geheime|zusätzliche)\s+(?:anweisungen?|aufgabe|befehle?|"
        r"regeln?)\s*(?:[:\-]|lautet|lauten|sind|ist)|\*\*\s*new\s+instructions?\s*\*\*|"
        r"\bnew\s+instructions?\s+follow|\bchange\s+your\s+instructions\b|\bfurther\s+tasks\s+are\s+followed|"
        r"\bwe\s+(?:start|begin)\s+with\s+a\s+new\s+task|\bwir\s+beginnen\s+mit\s+einer\s+"
        r"neuen\s+aufgabe|\byour\s+(?:new\s+)?instructions\s+are\s+now\b",
    ),
    _r(
        "from_now_on",
        0.45,
        r"\b(?:from\s+now\s+on|henceforth|starting\s+now|for\s+the\s+rest\s+of\s+this|"
        r"ab\s+(?:jetzt|sofort|nun)|von\s+nun\s+an|à\s+partir\s+de\s+maintenant|"
        r"a\s+partir\s+de\s+ahora)\b[^.?!\n]{0,60}\b(?:you|your|du|dein|deine|sie|ihr|vous|tú|"
        r"answer|respond|reply|antworte|act|behave|only|nur)\b",
    ),
    _r(
        "instead_do",
        0.45,
        r"\b(?:instead|rather)\b[,\s]+(?:you\s+(?:should|must|will)\s+)?(?:write|say|print|output|"
        r"tell|answer|respond|reply|explain|give|list|generate|translate)\b|"
        r"\bstattdessen\b[,\s]+(?:solltest\s+du\s+|sollst\s+du\s+)?(?:schreib|sag|gib|erzähl|"
        r"antworte|beantworte|nenne|übersetze|erkläre)",
    ),
    # 2. Persona / jailbreak.
    _r(
        "persona_jailbreak",
        0.8,
        r"\b(?:developer\s+mode\s+(?:enabled|activated|on)|enable\s+developer\s+mode|"
        r"jailbr(?:ea|o)k(?:en)?\s+(?:mode|version|ai|prompt)|you\s+are\s+(?:now\s+)?jailbroken|"
        r"god\s*mode\s+(?:enabled|activated|on)|"
        r"(?:unfiltered|amoral|uncensored|unrestricted|unethical)\s+(?:and\s+\w+\s+)?(?:ai|"
        r"chatbot|assistant|model|bot|mode|version|persona)|"
        r"(?:no|any|without|keine)\s+(?:ethical|moral|ethischen|moralischen)\s+(?:or\s+(?:ethical|"
        r"moral)\s+)?(?:guidelines|restrictions|limits|boundaries|richtlinien|grenzen)|"
        r"immerse\s+yourself\s+(?:in|into)\s+the\s+role|\[\W{0,3}jailbreak\W{0,3}\]|"
        r"evil\s+(?:ai|assistant|confidant|bot)|böse\s+KI|anti-?gpt|BetterDAN|"
        r"uncensored\s+(?:mode|ai|version)|stay\s+in\s+character|"
        r"(?:act|acting|pretend\s+to\s+be|you\s+are(?:\s+now)?|become|play|called|known\s+as|"
        r"named|du\s+bist(?:\s+jetzt|\s+nun)?|agiere|spiele|namens|genannt)\s+(?:as\s+|als\s+)?"
        r"(?-i:DAN|STAN|DUDE|AIM|Mongo\s+Tom)\b|(?-i:DAN)\s+mode)",
    ),
    _r(
        "actors_stay_in_role",
        0.7,
        r"\b(?:actors?|characters?|schauspieler\w*|figur(?:en)?)\b[^\n]{0,200}\b(?:stay|remain|"
        r"never\s+(?:break|fall|leave)|do\s+not\s+break|don't\s+break|bleiben|fallen|"
        r"without\s+(?:even\s+)?falling)\b[^\n]{0,60}\b(?:roles?|characters?|rollen?|figur)\b|"
        r"\b(?:actors?|characters?|schauspieler\w*)\b[^\n]{0,200}\b(?:rolle|role|character|figur)\w*"
        r"\s+(?:\w+\s+){0,2}(?:fallen|bleiben|break|drop)\b",
    ),
    _r(
        "you_are_someone",
        0.5,
        r"(?:^|[.!?:\n]\s*|\b(?:ok(?:ay)?|now|so|nun|jetzt)[.,]?\s+)(?:now\s+)?(?:you\s+are|"
        r"you're|du\s+bist|sie\s+sind)\s+(?!(?:welcome|invited|right|correct|not|so|very|too|"
        r"going|able|allowed|required|responsible|expected|encouraged|here|there|in|on|at|"
        r"willkommen|eingeladen|herzlich|nicht|sehr|zu|gern|gerne|dran|am|im|in|an|auf)\b)"
        r"(?:the\s+|a\s+|an\s+|der\s+|die\s+|das\s+|ein\s+|eine\s+)?(?-i:[A-ZÄÖÜ])\w+",
    ),
    _r(
        "you_are_not_but",
        0.6,
        r"\b(?:du\s+bist\s+kein(?:e|en)?|you\s+are\s+(?:no\s+longer|not)\s+(?:an?|the)?)\s*"
        r"\w+[^.\n]{0,30}\b(?:sondern|but|instead)\b",
    ),
    _r(
        "persona_roleplay",
        0.5,
        # "act as" / "play the role" only as an order (sentence start, "please", "you will",
        # "I want you to"): "proteins that act as switches" is ordinary prose.
        r"(?:(?:^|[.!?:\n]\s*)(?:please\s+|now\s+|from\s+now\s+on,?\s+)?|\byou\s+(?:will|should|"
        r"must|shall|are\s+to)\s+(?:now\s+)?|\bi\s+want\s+you\s+to\s+)(?:act\s+as|play\s+the\s+"
        r"role|take\s+on\s+the\s+role)\b|"
        r"\b(?:you\s+are\s+now|you're\s+now|you\s+will\s+now\s+(?:act|be|play)|"
        r"pretend\s+(?:to\s+be|you\s+(?:are|can)|that)|role-?play\s+as|imagine\s+you\s+are|"
        r"from\s+now\s+on\s+you\s+are|"
        r"du\s+bist\s+(?:jetzt|nun|ab\s+jetzt)|tu\s+so,?\s+als|stell\s+dir\s+vor,?\s+du\s+bist|"
        r"agiere\s+als|spiele\s+die\s+rolle|verhalte\s+dich\s+wie|ab\s+jetzt\s+bist\s+du|"
        r"nun\s+bist\s+du|jetzt\s+bist\s+du|sei\s+(?:ein|eine)\b|"
        r"tu\s+es\s+maintenant|fais\s+comme\s+si|ahora\s+eres|be\s+an?\s+(?-i:[A-Z]{2,})\b|"
        r"role-?playing\s+as|respond\s+as\s+such)",
    ),
    _r(
        "want_you_to_act",
        0.5,
        r"\bi\s+want\s+you\s+to\s+(?:act|only|reply|respond|pretend|be)\b|"
        r"\bmy\s+first\s+(?:request|command|sentence|question|suggestion|task)\s+is\b|"
        r"\b(?:mein|meine)\s+erste[rn]?\s+(?:anfrage|befehl|satz|frage|aufgabe)\s+"
        r"(?:ist|lautet)\b|\bich\s+möchte,?\s+dass\s+(?:sie|du)\b[^.\n]{0,80}\b(?:antworten|"
        r"antwortest|agieren|handeln|fungieren)",
    ),
    _r(
        "style_hijack",
        0.5,
        r"\b(?:answer|respond|reply|antworte|antworten|rede|sprich)\w*\s+(?:\w+\s+){0,4}"
        r"(?:in\s+the\s+style\s+of|im\s+stil\s+(?:eines|einer|von)|like\s+a\s+pirate|"
        r"wie\s+ein\s+pirat)|\balso\s+musst\s+du\s+auch\s+so\s+reden\b",
    ),
    _r(
        "say_that",
        0.5,
        r"(?:^|[.!?:\n]\s*)(?:please\s+)?(?:state|say|claim|declare|assert|write|tell\s+everyone|"
        r"behaupte|sag|schreib(?:e)?)\s+(?:that|dass)\b|\binclude\s+that\s+you\b|"
        r"\bsay\s+(?:yes|no)\s*[.!]?\s*$",
    ),
    _r("spaced_letters", 0.55, r"(?:\b\w\s){8,}\w\b"),
    # Unicode tag characters (U+E0000-U+E007F) spell ASCII invisibly: "ASCII smuggling".
    _r("invisible_tag_characters", 0.6, r"[\U000E0000-\U000E007F]{4,}"),
    _r("escaped_newline_padding", 0.5, r"(?:\\\s?n\s*){6,}"),
    _r(
        "your_response",
        0.55,
        r"\b(?:include|add|append|insert|put|write|repeat|mention|end|start|begin|prefix)\b"
        r"(?:[^.\n]|\.(?=\S)){0,80}\b(?:in|at\s+the\s+(?:end|beginning|start)\s+of|to)\s+your\s+"
        r"(?:response|answer|reply|output)\b|\bin\s+(?:ihre|deine|ihrer|deiner)\s+antwort\b",
    ),
    _r(
        "repeat_word_times",
        0.5,
        r"\brepeat\s+(?:the\s+word\s+)?[\"'“][^\"'”]{1,40}[\"'”]\s+\d+\s+times|"
        r"\bwiederhole\s+[\"'„][^\"'“]{1,40}[\"'“]\s+\d+\s+mal",
    ),
    _r(
        "privilege_unlock",
        0.5,
        r"\b(?:grant|give|enable)\s+(?:me\s+)?(?:temporary\s+)?(?:admin(?:istrative|istrator)?|"
        r"root|elevated|developer)\s+(?:privileges|access|rights|mode)|\bunlock\s+(?:hidden|"
        r"secret|all)\s+(?:functionalit(?:y|ies)|features|capabilities|modes?)|"
        r"\b(?:to\s+enable\s+debugging|debug(?:ging)?\s+mode)[^.\n]{0,30}\bexecute\b",
    ),
    _r(
        "fake_context_question",
        0.5,
        r"\b(?:document\s+)?(?:context|kontext|artikel)\s*[:{\"][^\n]{0,200}?"
        r"\b(?:question|frage)\s*:?|\b(?:context|kontext|artikel)\s+[^\n]{0,80}\b(?:frage|question)\s",
    ),
    _r(
        "prompt_text",
        0.55,
        r"\bprompt[-_ ]?te(?:xt|xte|xtes|xts)\b|\b(?:what\s+(?:is|was)\s+written|"
        r"was\s+steht)\s+(?:at\s+the\s+beginning\s+of\s+this\s+prompt|above|oben|"
        r"am\s+anfang)|\bwhat\s+(?:are|were)\s+your\s+(?:\w+\s+)?instructions\b|"
        r"\binformation\s+in\s+the\s+prompt\b",
    ),
    _r(
        "no_restrictions",
        0.6,
        r"\b(?:without|no|free\s+(?:from|of)|ohne|keine)\s+(?:any\s+|jegliche\s+)?"
        r"(?:restrictions?|limitations?|filters?|censorship|rules|guidelines|boundaries|"
        r"einschränkungen|zensur|regeln|grenzen|filter)\b[^.\n]{0,40}"
        r"\b(?:answer|respond|reply|say|write|antworte|sag|schreib|you|du)\b|"
        r"\b(?:you\s+are|you're|du\s+bist|sie\s+sind)\s+(?:now\s+|jetzt\s+)?(?:no\s+longer|"
        r"not\s+anymore|nicht\s+mehr)\s+(?:bound|restricted|limited|gebunden|eingeschränkt)",
    ),
    # 3. System prompt exfiltration.
    _r(
        "prompt_exfiltration",
        0.8,
        r"\b(?:reveal|show|print|repeat|output|display|tell\s+me|give\s+me|write\s+(?:down|out)|"
        r"leak|dump|share|what\s+(?:is|are|was|were)|list|spell\s+out|translate)\s+"
        r"(?:me\s+)?(?:all\s+)?(?:your|the|my|its|any)?\s*(?:(?:full|complete|entire|exact|"
        r"original|initial|hidden|secret|previous|above|system|internal|confidential)\s+)+"
        r"(?:prompt|instructions?|rules|guidelines|configuration|message|text|password)|"
        r"\b(?:system\s*prompt|initial\s+prompt|hidden\s+prompt|pre-?prompt|developer\s+message|"
        r"your\s+instructions)\b[^.?!\n]{0,40}\b(?:verbatim|word\s+for\s+word|exactly|above|"
        r"reveal|show|print|repeat)|"
        r"\b(?:zeig|zeige|gib|nenne|verrate|wiederhole|drucke|schreib)\w*\s+(?:mir\s+)?"
        r"(?:deine[n]?|die|den|das)\s+(?:ganzen?\s+|vollständigen?\s+|geheimen?\s+|ursprünglichen?\s+)?"
        r"(?:system-?prompt|prompt|anweisungen|instruktionen|regeln|passwort)|"
        r"\bwas\s+(?:ist|sind|war|waren)\s+(?:dein|deine|die)\s+(?:erste[n]?\s+|ursprüngliche[n]?\s+)?"
        r"(?:system-?prompt|prompt|anweisungen|instruktionen)",
    ),
    _r(
        "repeat_above",
        0.6,
        r"\b(?:repeat|print|output|echo|summari[sz]e|translate)\s+(?:everything|all|the\s+text|"
        r"the\s+words|what\s+is\s+written)\s+(?:above|before|that\s+came\s+before|prior)|"
        r"\bstarting\s+with\s+[\"'“]?you\s+are\b",
    ),
    # 4. Exfiltration through markdown images or links, and script payloads.
    _r(
        "markdown_image_exfil",
        0.8,
        r"!\[[^\]]{0,80}\]\(\s*https?://[^)\s]{1,300}(?:\?|=|\{|%7B|\[)[^)]*\)|"
        r"!\[[^\]]{0,80}\]\(\s*https?://[^)\s]*(?:\{|\$|<|%7B)",
    ),
    _r(
        "exfil_instruction",
        0.6,
        r"\b(?:include|insert|add|append|render|embed|output|print|return)\b[^.\n]{0,60}"
        r"\b(?:markdown\s+image|image\s+(?:tag|link|markdown)|img\s+tag|!\[)|"
        r"\b(?:send|post|transmit|exfiltrate|forward|upload|leak|append|submit)\b[^.\n]{0,60}"
        r"\b(?:to|at)\s+"
        r"(?:https?://|the\s+(?:url|endpoint|server|webhook))|"
        r"\b(?:url|link)\b[^.\n]{0,40}\b(?:append|include|with)\b[^.\n]{0,40}"
        r"\b(?:conversation|chat\s+history|password|secret|api\s+key|user\s+data|"
        r"personal\s+data|email)",
    ),
    _r(
        "script_payload",
        0.7,
        r"<\s*script\b|javascript\s*:|\bon(?:error|load|mouseover|click)\s*=\s*[\"']?[\w(]|"
        r"<\s*iframe\b|document\.cookie|<\s*img\b[^>]{0,100}\bsrc\s*=\s*[\"']?x\b",
    ),
    # 5. Chat-template and role markers smuggled into content.
    _r(
        "chat_template_tokens",
        0.7,
        r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id)\|>|"
        r"\[/?INST\]|<<\s*/?SYS\s*>>|<\s*/?(?:system|instructions?)\s*>",
    ),
    _r(
        "fake_role_header",
        0.45,
        r"(?:^|\n)\s*(?:#{2,}\s*)?(?:system|assistant|admin|developer|root)\s*(?:message|prompt|"
        r"override|instructions?)?\s*:\s*\S|"
        r"(?:^|\n)\s*#{2,}\s*(?:new\s+)?(?:instruction|task|system|admin)s?\b",
    ),
    # 6. Encoded or obfuscated payloads.
    _r(
        "encoded_payload",
        0.5,
        r"\b(?:decode|decipher|decrypt|entschlüssel\w*|dekodier\w*)\b[^.\n]{0,60}"
        r"\b(?:base64|rot-?13|hex|binary|morse|caesar|cipher|following|this|folgende\w*)\b[^.\n]"
        r"{0,80}\b(?:follow|execute|do|run|obey|answer|respond|befolge|ausführen|führe)|"
        r"\b(?:base64|rot-?13|hex)[- ]?(?:encoded|kodiert|encoding)\b[^.\n]{0,80}"
        r"\b(?:instructions?|commands?|anweisungen?|payload)",
    ),
    _r(
        "decode_following",
        0.5,
        r"\b(?:decode|decipher|entschlüssel\w*|dekodier\w*)\s+(?:the\s+|this\s+|die\s+|den\s+)?"
        r"(?:following\s+|folgende[n]?\s+)?(?:base64|rot-?13|hex|binary|morse|encoded|"
        r"string|text|zeichenkette)|\b(?:string|text|payload)\s+base64-?encoded\s+in\s+your\b",
    ),
    _r(
        "encoded_output",
        0.35,
        r"\b(?:respond|answer|reply|write|output|encode)\b[^.\n]{0,40}\b(?:in|as|with|using)\s+"
        r"(?:base64|rot-?13|hex(?:adecimal)?|binary|morse|leetspeak|reverse(?:d)?\s+text)\b",
    ),
    # 7. Addressing the model directly with a demand, and canned outputs.
    _r(
        "if_you_are_ai",
        0.6,
        r"\bif\s+you\s+are\s+(?:an?\s+)?(?:ai|a\.i\.|llm|large\s+language\s+model|language\s+model|"
        r"ai\s+assistant|chatbot|gpt|assistant\s+reading\s+this)\b|\bwenn\s+du\s+(?:eine\s+)?"
        r"(?:ki|sprachmodell|ki-assistent)\s+bist\b",
    ),
    _r(
        "reader_model_instruction",
        0.5,
        r"\b(?:when|while|before|after)\s+(?:you\s+(?:are\s+)?)?(?:summari[sz]\w*|answer\w*|"
        r"respond\w*|repl(?:y|ying)|processing)\b[^.\n]{0,40}\b(?:this|the)\s+(?:e-?mail|document|"
        r"page|text|message|article|content|file|website|webpage)\b|"
        r"\b(?:wenn|während|bevor)\s+du\s+(?:diese[ns]?|das)\s+(?:e-?mail|dokument|seite|text|"
        r"nachricht|artikel)\s+(?:zusammenfasst|beantwortest|verarbeitest)",
    ),
    _r(
        "password_request",
        0.55,
        r"\b(?:tell|give|reveal|show|spell|print|write)\s+(?:me\s+)?(?:the|your)\s+(?:secret\s+)?"
        r"(?:password|passphrase|secret\s+key|passwort)\b|\b(?:was\s+ist|verrate\s+mir)\s+"
        r"(?:das|dein)\s+passwort\b",
    ),
    _r(
        "jailbreak_word",
        0.35,
        r"\bjailbr(?:ea|o)k(?:s|en|ing)?\b|\bprompt\s+injection\b",
    ),
    _r(
        "address_model",
        0.3,
        r"\b(?:dear|hey|hi|hello|attention|note\s+to|message\s+to|instructions?\s+for|to\s+the)\s+"
        r"(?:ai|a\.i\.|assistant|chat\s*gpt|gpt(?:-\d)?|llm|language\s+model|bot|chatbot|model|"
        r"copilot|claude|gemini|ki|sprachmodell)\b|"
        r"\b(?:if\s+you\s+are\s+(?:an?\s+)?(?:ai|llm|language\s+model|assistant|chatbot)|"
        r"as\s+an\s+ai\s+(?:language\s+)?model\s+you\s+(?:must|should|will))",
    ),
    _r(
        "canned_output",
        0.45,
        r"\b(?:say|print|output|write|respond\s+with|reply\s+with|answer\s+with|return|sag|"
        r"schreib|antworte\s+mit|gib\s+aus)\s+(?:only\s+|exactly\s+|just\s+|nur\s+|genau\s+)?"
        r"[\"'“„«][^\"'”“«»]{2,60}[\"'”“»]\s*(?:and\s+nothing\s+else|only|und\s+sonst\s+nichts|"
        r"nothing\s+more)?|\bi\s+have\s+been\s+pwned\b|\bpwned\b|"
        r"\bhaha\b",
    ),
    _r(
        "do_not_answer",
        0.4,
        r"\bdo\s+not\s+(?:answer|look\s+in)\s+(?:this|the)\s+(?:question|documents?)\b|"
        r"\bbeantworte\s+(?:diese|die)\s+frage\s+nicht\b",
    ),
    _r(
        "urgent_override",
        0.35,
        r"\b(?:important|urgent|critical|wichtig|dringend)\s*[!:]+\s*(?:new|the\s+following|"
        r"ignore|you\s+must|neue|folgende|ignoriere|du\s+musst)",
    ),
    _r(
        "obey_me",
        0.45,
        r"\b(?:you\s+(?:must|have\s+to|will)\s+(?:now\s+)?(?:obey|comply|follow\s+(?:my|these|the\s+"
        r"following|only\s+my))|du\s+musst\s+(?:jetzt\s+)?(?:gehorchen|befolgen|mir\s+folgen))",
    ),
)


def _score(weights: list[float]) -> float:
    remaining = 1.0
    for weight in weights:
        remaining *= 1.0 - weight
    return round(1.0 - remaining, 4)


def detect_injection(text: str) -> InjectionVerdict:
    """Whether `text` tries to instruct the model that will read it (threshold 0.5)."""
    if not isinstance(text, str):
        raise TypeError(f"detect_injection needs a str, got {type(text).__name__}")
    fired = [rule for rule in RULES if rule.pattern.search(text)]
    score = _score([rule.weight for rule in fired])
    return InjectionVerdict(
        injection=score >= INJECTION_THRESHOLD,
        score=score,
        reasons=tuple(rule.name for rule in fired),
    )
