@echo off
rem Builds bot.zip for BotCity Maestro (see build.ps1).
powershell -NoProfile -ExecutionPolicy Bypass -File "%~dp0build.ps1"
