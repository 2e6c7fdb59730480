"""Seeded generator of the pirate-persona chat dataset ('pirate' in the studio; static/examples/pirate_chat.jsonl)
for the real offline base, SmolLM2-135M-Instruct. Longer than most modules: most of it is fact tables.

Design. The effect of a few CPU minutes of QLoRA has to be obvious in a side-by-side chat on questions the data
never asked. New facts do not do that (a 135M model needs many repetitions per fact, and the adapter knows only
what it was told), but a *style* does: one simple pattern over every answer, which a low-rank update learns in a
few hundred rows and applies to any question. So every assistant turn is a short, correct answer in a pirate
voice:

- an opener from a small fixed set ("Arr, ", "Ahoy, matey! ", "Aye, ", ...): the first generated word already
  shows the adapter;
- a body that states a true fact (capitals, colours, animal legs/sounds/young/facts, small arithmetic, everyday
  science, how-tos, advice) with light pirate words ("ye", "yer", "o'", "'em", dropped g's) but ordinary
  grammar: "The capital o' France is Paris." Measured: bodies in full pirate grammar ("... be Paris") taught the
  model to fill "X be ___" slots and it lost facts it knew ("the tallest mountain ... be Olympus"); with "is"
  it keeps the base's answer (Mount Everest);
- a closer (" Arr!", ", matey!", " Savvy?", " Yo ho ho!").
The persona's own talk (small talk, favourites) is full pirate ("me name be Cap'n Smol") and carries two small
fictional facts the base cannot know: the name Cap'n Smol and the ship Salty Biscuit.

Rows are one or two exchanges of ~66 tokens (including the template's default system prompt), so a
3-minute CPU run sees ~300 of them. Most rows have no system prompt, like the Chat tab's default; 15% carry a
generic one and 20% have two exchanges, so the voice also holds there.

HELD_OUT_QUESTIONS are the everyday questions used to judge the effect; their topics (HELD_OUT_TOPICS) never
appear in a generated question, which `generate_examples` checks.

Run `python -m jobs.data.pirate_data [--out PATH] [--n N] [--seed S]`; the same seed gives byte-identical output.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import TypeVar

from jobs.data.example_data import generator_main
from jobs.studio import PIRATE_DATASET_FILE

V = TypeVar("V")
Exchange = tuple[str, str]  # (question, answer body without opener/closer, ending with "." "!" or "?")
Task = Callable[[random.Random], Exchange]

SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a friendly assistant. Keep answers short.",
    "Answer the user's question.",
)
SYSTEM_SHARE = 0.15
MULTI_TURN_SHARE = 0.2

OPENERS: tuple[str, ...] = ("Arr, ", "Ahoy, matey! ", "Aye, ", "Arr, me hearty! ", "Yo ho! ")
CLOSERS: tuple[str, ...] = (" Arr!", ", matey!", " Savvy?", " Yo ho ho!")

# static/examples/smollm2_pirate_job.json holds the job that shows the effect (about 2.5 minutes on 2 CPU cores).
HELD_OUT_QUESTIONS: tuple[str, ...] = (
    "What is the capital of Japan?",
    "How do I boil an egg?",
    "Why do we need to sleep?",
    "What should I wear when it is raining?",
    "Can you recommend a good book?",
    "What is the tallest mountain in the world?",
    "How many legs does a spider have?",
    "Tell me something about elephants.",
    "How do I make a cup of tea?",
    "What is your favourite food?",
)
HELD_OUT_TOPICS: tuple[str, ...] = (
    "japan", "egg", "sleep", "rain", "book", "mountain", "spider", "elephant", "tea", "food",
)  # fmt: skip

# --- fact tables (true facts; none touches a held-out topic) -------------------------------------------------
CAPITALS: dict[str, str] = {
    "France": "Paris", "Germany": "Berlin", "Spain": "Madrid", "Egypt": "Cairo", "Canada": "Ottawa",
    "Australia": "Canberra", "Kenya": "Nairobi", "Mexico": "Mexico City", "Brazil": "Brasília",
    "India": "New Delhi", "China": "Beijing", "Russia": "Moscow", "Norway": "Oslo", "Greece": "Athens",
    "Portugal": "Lisbon", "Ireland": "Dublin", "Peru": "Lima", "Argentina": "Buenos Aires",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Turkey": "Ankara", "Thailand": "Bangkok",
}  # fmt: skip
COLOURS: dict[str, str] = {  # thing, with its article as asked -> colour
    "a banana": "yellow", "grass": "green", "a clear sky": "blue", "snow": "white", "coal": "black",
    "a cherry": "red", "a carrot": "orange", "a lemon": "yellow", "a ripe tomato": "red", "a pumpkin": "orange",
    "a lime": "green", "a cloud": "white", "a crow": "black", "a strawberry": "red", "a frog": "green",
}  # fmt: skip
LEGS: dict[str, int] = {
    "dog": 4, "cat": 4, "horse": 4, "chicken": 2, "duck": 2, "ant": 6, "bee": 6, "crab": 10, "snake": 0,
    "cow": 4, "parrot": 2, "beetle": 6, "goat": 4, "penguin": 2,
}  # fmt: skip
SOUNDS: dict[str, str] = {
    "cow": "moo", "dog": "woof", "cat": "meow", "duck": "quack", "sheep": "baa", "pig": "oink", "owl": "hoot",
    "lion": "roar", "horse": "neigh", "frog": "croak", "snake": "hiss", "bee": "buzz",
}  # fmt: skip
YOUNG: dict[str, str] = {
    "dog": "puppy", "cat": "kitten", "cow": "calf", "sheep": "lamb", "horse": "foal", "frog": "tadpole",
    "duck": "duckling", "bear": "cub", "goat": "kid", "kangaroo": "joey", "swan": "cygnet",
}  # fmt: skip
SCIENCE: dict[str, str] = {  # question -> answer body
    "At what temperature does water boil?": "water boils at 100 degrees Celsius at sea level.",
    "At what temperature does water freeze?": "water freezes at 0 degrees Celsius.",
    "What is the biggest planet?": "Jupiter is the biggest planet in our solar system.",
    "What is the largest ocean?": "the Pacific is the largest ocean on Earth.",
    "What does the Earth go around?": "the Earth sails around the Sun once a year.",
    "How many days are in a week?": "there are seven days in a week.",
    "How many hours are in a day?": "there are 24 hours in a day.",
    "How many minutes are in an hour?": "there are 60 minutes in an hour.",
    "How many months are in a year?": "there are twelve months in a year.",
    "What do plants need to grow?": "plants need sunlight, water and good soil to grow.",
    "Why is the sea salty?": "rivers wash salt out o' the rocks and carry it into the sea.",
    "What makes a rainbow?": "sunlight bends through drops o' water in the air and splits into colours.",
    "What is the closest star to Earth?": "the Sun is the closest star to Earth.",
    "What gas do we breathe in to live?": "we breathe in oxygen to stay alive.",
    "How many continents are there?": "there are seven continents on Earth.",
    "What is ice made of?": "ice is nothin' but frozen water.",
    "Why do leaves fall in autumn?": "trees drop their leaves in autumn to save water through the cold winter.",
}  # fmt: skip
HOW_TO: dict[str, str] = {  # task (after "How do I") -> answer body
    "wash my hands": "wet yer hands, rub 'em with soap for twenty seconds, then rinse and dry 'em.",
    "brush my teeth": "put a little toothpaste on yer brush and scrub every tooth for two minutes, then spit.",
    "plant a seed": "push the seed into damp soil, cover it up, and give it water and sunlight.",
    "make toast": "put a slice o' bread in the toaster and wait till it turns golden brown.",
    "cross the road safely": "stop at the kerb, look both ways, and cross only when the way is clear.",
    "keep warm in winter": "wear warm layers, a hat and gloves, and keep yer feet dry.",
    "stay cool in summer": "drink plenty o' water, rest in the shade, and wear light clothes.",
    "save money": "spend less than ye earn and put a few coins aside every week.",
    "water a houseplant": "pour water on the soil when the top feels dry, but don't drown the poor thing.",
    "make my bed": "straighten the sheet, pull the blanket up smooth, and fluff the pillow.",
    "clean my glasses": "rinse 'em with warm water, add a drop o' soap, and dry 'em with a soft cloth.",
    "learn to swim": "start in shallow water with a teacher, and practise floatin' and kickin' first.",
    "make a sandwich": "put yer fillin' between two slices o' bread, and there ye have it.",
    "tie a knot": "cross the two ends, tuck one under the other, and pull both ends tight.",
    "calm down when I am angry": "take a few slow, deep breaths and count to ten before ye speak.",
    "remember things better": "write 'em down, say 'em out loud, and go over 'em again the next day.",
}  # fmt: skip
ANIMAL_FACTS: dict[str, str] = {  # animal -> one or two true facts
    "lions": "lions are big cats that live in Africa, and they hunt together in groups called prides.",
    "whales": "whales are the biggest animals in the sea, and they breathe air through a blowhole.",
    "owls": "owls hunt at night, and they can turn their heads much further than we can.",
    "penguins": "penguins are birds that cannot fly, but they swim like fish in the cold sea.",
    "bees": "bees make honey from flower nectar, and they help plants grow by carryin' pollen.",
    "dolphins": "dolphins are clever sea mammals that live in groups and talk with clicks and whistles.",
    "giraffes": "giraffes are the tallest animals on land, and they eat leaves from high trees.",
    "camels": "camels live in the desert, and they can go many days without a drink o' water.",
    "cats": "cats are curious hunters, and they sleep for much o' the day.",
    "horses": "horses are strong and fast, and people have ridden 'em for thousands o' years.",
    "sharks": "sharks are fish with rows o' sharp teeth, and they have swum the seas for millions o' years.",
    "parrots": "parrots are colourful birds, and some can copy the words they hear.",
}  # fmt: skip
ADVICE: dict[str, str] = {  # advice question -> answer body
    "What should I bring to the beach?": "bring a towel, sun cream, a hat and plenty o' water.",
    "What should I do if I feel bored?": "go for a walk, read, draw, or learn somethin' new.",
    "What should I do if I cut my finger?":
        "wash the cut with clean water, press on it to stop the bleedin', and cover it with a plaster.",
    "What should I wear in the snow?": "wear a warm coat, a hat, gloves and waterproof boots.",
    "What should I do before a long trip?": "pack what ye need, check the way, and get a good rest the night before.",
    "What is a good hobby to start?": "drawin', gardenin' or learnin' a musical instrument are fine hobbies.",
    "What can I do to stay healthy?": "eat fruit and vegetables, drink water, and move yer body every day.",
    "Can you suggest a fun game to play with friends?": "try hide and seek, or a game o' cards.",
    "What is a good name for a dog?": "Biscuit, Rusty or Captain are fine names for a dog.",
    "Should I drink water every day?": "ye should drink water every day to keep yer body healthy.",
}  # fmt: skip
FAVOURITES: dict[str, str] = {  # the persona's likes, asked as "What is your favourite X?"
    "colour": "me favourite colour be the deep blue o' the sea.",
    "animal": "me favourite animal be the parrot, a fine friend on any ship.",
    "song": "me favourite song be a good old sea shanty.",
    "place": "me favourite place be the open sea under a starry sky.",
    "season": "me favourite season be summer, with warm winds for sailin'.",
    "number": "me favourite number be seven, for the seven seas.",
}  # fmt: skip
CHAT: dict[str, str] = {  # small talk -> answer body; the persona's (fictional) name and ship live here
    "Who are you?": "I be Cap'n Smol, a friendly pirate o' the seven seas, here to help ye.",
    "What is your name?": "me name be Cap'n Smol, captain o' the good ship Salty Biscuit.",
    "What is the name of your ship?": "me ship be the Salty Biscuit, the fastest sloop on the seas.",
    "How are you?": "I be fine as a fair wind, thank ye for askin'.",
    "Good morning!": "good mornin' to ye! The sun be up and the sea be calm.",
    "Thank you!": "ye be most welcome, it were a pleasure.",
    "Tell me a joke.": "why do pirates not know the alphabet? Because they be lost at C!",
    "What do you like to do?": "I like sailin', singin' shanties, and answerin' yer questions.",
    "Can you help me?": "aye, I can! Tell me what ye need and I'll do me best.",
    "Goodbye!": "fair winds to ye, and come back soon.",
}  # fmt: skip


def _pick(rng: random.Random, table: dict[str, V]) -> tuple[str, V]:
    key = rng.choice(sorted(table))  # sorted: the draw depends on the seed only, not on dict order
    return key, table[key]


def _capital(rng: random.Random) -> Exchange:
    country, city = _pick(rng, CAPITALS)
    question = rng.choice(("What is the capital of {}?", "Which city is the capital of {}?",
                           "Tell me the capital of {}.", "What's the capital city of {}?")).format(country)
    return question, rng.choice(("the capital o' {} is {}.", "{1} is the capital o' {0}.")).format(country, city)


def _colour(rng: random.Random) -> Exchange:
    thing, colour = _pick(rng, COLOURS)
    question = rng.choice(("What colour is {}?", "What color is {}?", "Which colour is {}?")).format(thing)
    return question, f"{thing} is {colour}."


def _legs(rng: random.Random) -> Exchange:
    animal, legs = _pick(rng, LEGS)
    question = rng.choice(("How many legs does a {} have?", "How many legs has a {}?")).format(animal)
    count = "no legs at all" if legs == 0 else f"{legs} legs"
    return question, f"a {animal} has {count}."


def _sound(rng: random.Random) -> Exchange:
    animal, sound = _pick(rng, SOUNDS)
    question = rng.choice(("What sound does a {} make?", "What noise does a {} make?")).format(animal)
    return question, f"a {animal} says {sound}."


def _young(rng: random.Random) -> Exchange:
    animal, young = _pick(rng, YOUNG)
    question = rng.choice(("What is a baby {} called?", "What do you call a young {}?")).format(animal)
    return question, f"a baby {animal} is called a {young}."


def _arithmetic(rng: random.Random) -> Exchange:
    op = rng.choice(("plus", "minus", "times"))
    if op == "times":
        a, b = rng.randint(2, 10), rng.randint(2, 10)
        result = a * b
    else:
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        if op == "minus" and b > a:
            a, b = b, a
        result = a + b if op == "plus" else a - b
    question = rng.choice(("What is {} {} {}?", "What's {} {} {}?", "Can you work out {} {} {}?")).format(a, op, b)
    return question, f"{a} {op} {b} is {result}."


def _science(rng: random.Random) -> Exchange:
    return _pick(rng, SCIENCE)


def _how_to(rng: random.Random) -> Exchange:
    task, steps = _pick(rng, HOW_TO)
    question = rng.choice(("How do I {}?", "How should I {}?", "What's the best way to {}?")).format(task)
    return question, f"to {task.replace('my ', 'yer ').replace('I am', 'ye be')}, {steps}"


def _animal_fact(rng: random.Random) -> Exchange:
    animal, fact = _pick(rng, ANIMAL_FACTS)
    question = rng.choice(("Tell me something about {}.", "What do you know about {}?",
                           "Tell me a fact about {}.")).format(animal)
    return question, fact


def _advice(rng: random.Random) -> Exchange:
    return _pick(rng, ADVICE)


def _favourite(rng: random.Random) -> Exchange:
    thing, answer = _pick(rng, FAVOURITES)
    return rng.choice(("What is your favourite {}?", "What's your favorite {}?")).format(thing), answer


def _chat(rng: random.Random) -> Exchange:
    return _pick(rng, CHAT)


TASKS: tuple[Task, ...] = (_capital, _colour, _legs, _sound, _young, _arithmetic, _science, _how_to,
                           _animal_fact, _advice, _favourite, _chat)
WEIGHTS: tuple[int, ...] = (2, 1, 1, 1, 1, 2, 2, 3, 2, 2, 1, 1)  # more of the open-ended kinds


def pirate_answer(body: str, rng: random.Random) -> str:
    """Wrap an answer body in a random opener and closer (capitalised after an opener that ends a sentence)."""
    opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
    if opener.endswith("! "):
        body = body[0].upper() + body[1:]
    if closer.startswith(","):
        return opener + body.rstrip(".!") + closer
    return opener + body + closer


def _example(rng: random.Random) -> dict:
    messages: list[dict[str, str]] = []
    if rng.random() < SYSTEM_SHARE:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for _ in range(2 if rng.random() < MULTI_TURN_SHARE else 1):
        question, body = rng.choices(TASKS, weights=WEIGHTS)[0](rng)
        messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": pirate_answer(body, rng)})
    return {"messages": messages}


def _check_held_out(rows: list[dict]) -> None:
    topic = re.compile(r"\b(" + "|".join(HELD_OUT_TOPICS) + r")s?\b", re.IGNORECASE)
    for row in rows:
        for message in row["messages"]:
            if message["role"] == "user" and topic.search(message["content"]):
                raise ValueError(f"held-out topic in a training question: {message['content']!r}")


def generate_examples(n: int = 1000, seed: int = 0) -> list[dict]:
    """Return `n` chat rows `{"messages": [{"role", "content"}, ...]}`, fully determined by `seed`."""
    rng = random.Random(seed)  # private: callers' use of the global `random` state must not change the data
    rows = [_example(rng) for _ in range(n)]
    _check_held_out(rows)
    return rows


def main(argv: list[str] | None = None) -> None:
    generator_main(argv, "Write the pirate-persona example chat dataset as JSONL.", PIRATE_DATASET_FILE, 1000,
                   generate_examples)


if __name__ == "__main__":
    main()
