"""Chat rows of a set length in demo tokens, made of a few plain words, for tests that plan packed sequences."""

WORDS = ["the", "model", "learns", "to", "answer", "short", "questions", "about", "numbers", "colours", "and",
         "animals", "in", "plain", "words"]


def word_rows(count: int, question_words: int, answer_words: int) -> list[dict]:
    """`count` one-turn chats: a numbered question of `question_words` words and an answer of `answer_words`."""
    return [{"messages": [
        {"role": "user", "content": f"Question {i}: " + " ".join(WORDS[(i + k) % len(WORDS)]
                                                                for k in range(question_words))},
        {"role": "assistant", "content": " ".join(WORDS[(3 * i + k) % len(WORDS)] for k in range(answer_words))}]}
        for i in range(count)]
