#!/usr/bin/env bash
# The README's walkthrough: ask, correct, like three answers, learn, ask again.
#
#   bash examples/walkthrough.sh            # in a fresh data root of its own
#   LEARNLOOP_HOME=~/my-root bash examples/walkthrough.sh
#
# It uses the default model (SmolLM2-135M-Instruct) and learnloop's default settings, but
# samples with a fixed seed (SEED, default 6), so that a run prints what the README shows;
# SEED=-1 samples anew each time. With four feedback items the first cycle is a close
# call: on some seeds the gate keeps the base model, the new version having got worse at
# general questions (the README says how often). A machine's first use also converts the
# base model, once.
set -euo pipefail

export LEARNLOOP_HOME="${LEARNLOOP_HOME:-$(mktemp -d -t learnloop-walkthrough.XXXX)}"
learnloop="${LEARNLOOP:-learnloop}"
seed="${SEED:-6}"
started=$SECONDS
echo "data root: $LEARNLOOP_HOME"

# ask: returns the turn's id with --json, so we can rate it
ask() { "$learnloop" ask "$1" --seed "$seed" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["turn_id"])'; }

# 1. A question the model cannot know, and the answer it should give.
question="What is the name of our team's build server?"
turn=$(ask "$question")
"$learnloop" log -n 1
"$learnloop" feedback "$turn" down --correction "Our build server is called Hopper."

# 2. Three answers you like: questions this small model gets right. (Liking a wrong answer
#    teaches it; the gate then finds the general questions worse and keeps the base.)
for liked in "What is the capital of Japan?" \
             "What is the boiling point of water in Celsius?" \
             "What is the chemical symbol for water?"; do
  "$learnloop" feedback "$(ask "$liked")" up
done

# 3. Learn: one cycle on these four feedback items, judged by what it was taught.
"$learnloop" learn

# 4. The new version answers.
"$learnloop" ask "$question" --seed "$seed"
echo "walkthrough done in $(( SECONDS - started )) s"
