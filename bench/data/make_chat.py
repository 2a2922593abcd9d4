#!/usr/bin/env python3
# Writes the chat set of bench/finetune.sh: JSON Lines of {"messages": [...]}
# in which the help desk of a made-up bookshop answers questions about its
# branches, orders and returns in one fixed style, from a few fixed rules
# (the opening hours of each day, the delivery time of each shipping method,
# which items may be returned). Every conversation is different; the same
# arguments give the same file, byte for byte.
#   make_chat.py [COUNT [SEED]] > chat.jsonl      (defaults 600, 7)
import json
import random
import sys

SYSTEM = "You are the help desk of Harbor Books."
SIGN_OFF = "Is there anything else Harbor Books can do for you?"
BRANCHES = ["Riverside", "Old Town", "Hillcrest", "Station Road", "Market Square", "Northgate",
            "Lakeview", "Castle Street", "Westbrook", "the Harbour"]
HOURS = {"Monday": "9 am to 6 pm", "Tuesday": "9 am to 6 pm", "Wednesday": "9 am to 6 pm",
         "Thursday": "9 am to 8 pm", "Friday": "9 am to 8 pm", "Saturday": "10 am to 5 pm",
         "Sunday": None}
SHIPPING = {"standard": "3 to 5 working days", "express": "1 working day",
            "collect in store": "2 working days, at the branch you chose"}
RETURNABLE = ["a paperback", "a hardback", "a calendar", "a diary", "a map", "a board game",
              "a jigsaw puzzle", "an atlas", "a cookbook", "a notebook"]
FINAL = ["a gift card", "an e-book", "a magazine", "a printed poster", "a signed first edition"]
NAMES = ["Anna", "Ben", "Chloe", "David", "Ella", "Frank", "Grace", "Hugo", "Iris", "Jack",
         "Kate", "Leo", "Maya", "Noah", "Olivia", "Paul", "Ruth", "Sam", "Tara", "Victor"]


def hours(rng):
    branch, day = rng.choice(BRANCHES), rng.choice(list(HOURS))
    ask = rng.choice(["When is the %s branch open on %s?", "What are your hours at %s on %s?",
                      "Is the %s shop open on %s?"]) % (branch, day)
    if HOURS[day] is None:
        say = "Our %s branch is closed on Sundays." % branch
    else:
        say = "Our %s branch is open from %s on %s." % (branch, HOURS[day], day)
    return ask, say


def order(rng):
    number, method = rng.randrange(10000, 99999), rng.choice(list(SHIPPING))
    ask = rng.choice(["I ordered with %s delivery, order %d. When will it arrive?",
                      "Where is my order %d? I chose %s.",
                      "How long does order %d take with %s?"])
    ask = ask % ((method, number) if ask.startswith("I ordered") else (number, method))
    say = "Order %d was sent with %s delivery, which takes %s." % (number, method,
                                                                 SHIPPING[method])
    return ask, say


def returns(rng):
    item = rng.choice(RETURNABLE + FINAL)
    days = rng.randrange(2, 60)
    ask = rng.choice(["Can I return %s I bought %d days ago?",
                      "I bought %s %d days ago. May I send it back?"]) % (item, days)
    if item in FINAL:
        say = "I am sorry, %s cannot be returned." % item
    elif days <= 30:
        say = "Yes, %s can be returned within 30 days with the receipt: %d days are left." % (
            item, 30 - days)
    else:
        say = "I am sorry, %s can only be returned within 30 days, and %d have passed." % (
            item, days)
    return ask, say


def conversation(rng):
    name = rng.choice(NAMES)
    ask, say = rng.choice([hours, order, returns])(rng)
    return {"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi, this is %s. %s" % (name, ask)},
        {"role": "assistant", "content": "Hello %s! %s %s" % (name, say, SIGN_OFF)},
    ]}


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 7)
    seen = set()
    while len(seen) < count:
        line = json.dumps(conversation(rng), ensure_ascii=False)
        if line not in seen:
            seen.add(line)
            sys.stdout.write(line + "\n")


if __name__ == "__main__":
    main()
