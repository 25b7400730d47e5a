#!/bin/sh
# Builds bot.zip, the package BotCity Maestro deploys: the bot, its requirements and its
# resources; never a token file, a virtual environment or caches.
set -e
cd "$(dirname "$0")"
rm -f bot.zip
zip -q -r bot.zip bot.py requirements.txt resources -x "*__pycache__*" "*.pyc"
echo "Built $(pwd)/bot.zip"
