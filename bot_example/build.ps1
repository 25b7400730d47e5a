# Builds bot.zip, the package BotCity Maestro deploys: the bot, its requirements and its
# resources; never a token file, a virtual environment or caches.
$ErrorActionPreference = "Stop"
Set-Location -Path $PSScriptRoot
if (Test-Path bot.zip) { Remove-Item bot.zip }
Compress-Archive -Path bot.py, requirements.txt, resources -DestinationPath bot.zip
Write-Output "Built $PSScriptRoot\bot.zip"
