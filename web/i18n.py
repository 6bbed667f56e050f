"""English and Japanese: a dictionary keyed by the English text.

The language is the user's choice, else the browser's (Accept-Language), else English.
Validation reasons from the domain are English sentences; the common ones are
translated by pattern, the rest are shown as they are.
"""

from __future__ import annotations

import re
from typing import Any

SUPPORTED = ("en", "ja")
DEFAULT = "en"

JA: dict[str, str] = {
    # navigation and common words
    "DICOM Appliance": "DICOM アプライアンス",
    "Schedule board": "予約ボード",
    "Board": "ボード",
    "Schedule": "予約",
    "New procedure": "新規予約",
    "Admin": "管理",
    "Devices": "機器",
    "Users": "ユーザー",
    "Procedure catalog": "検査カタログ",
    "Audit log": "監査ログ",
    "Printers": "プリンター",
    "Destinations": "送信先 (PACS)",
    "coming soon": "準備中",
    "My account": "アカウント",
    "Sign in": "ログイン",
    "Sign out": "ログアウト",
    "User name": "ユーザー名",
    "Password": "パスワード",
    "Password again": "パスワード (確認)",
    "New password": "新しいパスワード",
    "Language": "言語",
    "Browser language": "ブラウザーの言語",
    "Save": "保存",
    "Cancel": "取消",
    "Back": "戻る",
    "Edit": "編集",
    "Delete": "削除",
    "Add": "追加",
    "Search": "検索",
    "Today": "今日",
    "Show": "表示",
    "Role": "役割",
    "Front desk": "受付",
    "Active": "有効",
    "yes": "はい",
    "no": "いいえ",
    # first run
    "First start": "初回設定",
    "Setup token": "セットアップトークン",
    "Create the admin account": "管理者アカウントを作成",
    "setup-help": "このアプライアンスにはまだ管理者がいません。起動時に標準エラー出力に表示されたセットアップトークンを入力し、管理者のパスワードを設定してください。",
    # board
    "Patient name, ID or accession number": "患者名・患者ID・受付番号",
    "Date": "日付",
    "No procedures": "予約はありません",
    "Time": "時刻",
    "Patient": "患者",
    "Patient ID": "患者ID",
    "Accession number": "受付番号",
    "Procedure": "検査",
    "Status": "状態",
    "Station": "装置",
    "Search results": "検索結果",
    "All rooms": "すべての検査室",
    "Live": "自動更新中",
    "Session ended: sign in again": "セッションが終了しました。再度ログインしてください",
    "SCHEDULED": "予約済",
    "ARRIVED": "来院",
    "READY": "準備完了",
    "STARTED": "検査中",
    "COMPLETED": "完了",
    "DISCONTINUED": "中止",
    "CANCELED": "取消済",
    "Schedule again": "同じ患者で予約",
    "Performed (MPPS)": "実施情報 (MPPS)",
    "Last change": "最終更新",
    "IN PROGRESS": "検査中",
    "This patient ID is registered as": "この患者IDは次の患者で登録されています:",
    "Change this patient's details to the ones below": "この患者の情報を下記の内容に変更する",
    "is registered with another name, birth date or sex": "別の氏名・生年月日・性別で登録されています",
    # form
    "Patient details": "患者情報",
    "Find an existing patient": "既存の患者を検索",
    "Name": "氏名",
    "Family name": "姓",
    "Given name": "名",
    "Alphabetic": "ローマ字",
    "Ideographic (kanji)": "漢字",
    "Phonetic (kana)": "ふりがな",
    "Birth date": "生年月日",
    "Sex": "性別",
    "Male": "男性",
    "Female": "女性",
    "Other": "その他",
    "unknown": "不明",
    "Order": "オーダー",
    "Requested procedure": "依頼検査",
    "Choose…": "選択してください…",
    "Room / station": "検査室 / 装置",
    "Modality": "モダリティ",
    "from the station": "装置から",
    "Start": "開始日時",
    "Referring physician": "紹介医",
    "Requesting physician": "依頼医",
    "Performing physician": "実施医",
    "Priority": "優先度",
    "Step description": "ステップの説明",
    "Cancel this procedure": "この予約を取り消す",
    "Reason": "理由",
    "Edit procedure": "予約の編集",
    "Scheduled.": "予約しました。",
    "Saved.": "保存しました。",
    "Cancelled.": "取り消しました。",
    "Please correct the fields marked below.": "以下の項目を修正してください。",
    "STAT": "緊急",
    "HIGH": "高",
    "ROUTINE": "通常",
    "MEDIUM": "中",
    "LOW": "低",
    # admin
    "AE title": "AE タイトル",
    "Host": "ホスト",
    "Port": "ポート",
    "Description": "説明",
    "Worklist policy": "ワークリスト設定",
    "Station filter": "装置フィルター",
    "Hide completed": "完了分を隠す",
    "Character set": "文字セット",
    "Result limit": "最大件数",
    "Managed by": "管理元",
    "configuration file": "設定ファイル",
    "web": "Web",
    "New device": "新しい機器",
    "modality": "検査装置",
    "pacs": "PACS",
    "printer-client": "プリント依頼元",
    "none": "なし",
    "calling-ae": "呼出し AE タイトル",
    "auto": "自動",
    "devices-help": "設定ファイルの機器は起動時に設定ファイルから読み込まれます。変更は設定ファイルで行ってください。",
    "Edit device": "機器の編集",
    "New user": "新しいユーザー",
    "API tokens": "API トークン",
    "New token": "新しいトークン",
    "Token name": "トークン名",
    "Revoke": "無効化",
    "Copy this token now; it is not shown again:": "このトークンを今コピーしてください。二度と表示されません:",
    "Code value": "コード値",
    "Coding scheme": "コード体系",
    "Meaning": "意味",
    "Protocol code": "プロトコルコード",
    "Import CSV": "CSV 取り込み",
    "Export CSV": "CSV 書き出し",
    "Imported %(n)s procedures.": "%(n)s 件の検査を取り込みました。",
    "When": "日時",
    "Who": "誰が",
    "Action": "操作",
    "Object": "対象",
    "Detail": "詳細",
    "From": "発信元",
    "All actions": "すべての操作",
    "Change password": "パスワード変更",
    "Current password": "現在のパスワード",
    # errors
    "Forbidden": "権限がありません",
    "Not found": "見つかりません",
    "The form has expired; please try again.": "フォームの有効期限が切れました。もう一度お試しください。",
    "Wrong user name or password.": "ユーザー名またはパスワードが違います。",
    "Too many failed sign-ins; try again in %(m)s minutes.": "ログインの失敗が多すぎます。%(m)s 分後に再度お試しください。",
    "Your session has ended; please sign in again.": "セッションが終了しました。再度ログインしてください。",
    "is required": "必須です",
    "is not a date": "日付ではありません",
    "is in the future": "未来の日付です",
    "is not a date and time": "日時ではありません",
    "is not a known station": "登録された装置ではありません",
    "is not in the catalog": "カタログにありません",
    "is already in use": "既に使われています",
    "is already taken": "既に使われています",
    "the two passwords differ": "2つのパスワードが一致しません",
    "must not contain ^, = or \\": "^ = \\ は使えません",
    "is not the setup token printed at start": "起動時に表示されたセットアップトークンではありません",
    "is not a modality code": "モダリティコードではありません",
    "must be M, F, O or empty": "M・F・O または空欄にしてください",
    "is not a whole number": "整数ではありません",
    "is already in the catalog": "既にカタログにあります",
    "is already used by another device": "既に他の機器が使っています",
    "is managed by the configuration file": "設定ファイルで管理されています",
    "is not UTF-8 or Shift_JIS text": "UTF-8 または Shift_JIS のテキストではありません",
    "is already used for another patient": "既に他の患者に使われています",
}

PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^is longer than (\d+) characters$"), r"\1 文字以内で入力してください"),
    (re.compile(r"^must be at least (\d+) characters long$"), r"\1 文字以上必要です"),
    (re.compile(r"^contains control characters$"), "制御文字が含まれています"),
    (re.compile(r"^must not contain a backslash$"), "\\ は使えません"),
    (re.compile(r"^must be one of (.+)$"), r"次のいずれかにしてください: \1"),
    (re.compile(r"^is not a date YYYY-?MM-?DD$"), "日付ではありません"),
]

CATALOGS = {"ja": JA}


def translate(text: str, lang: str, **params: Any) -> str:
    """The text in the language (English keys; unknown texts stay English)."""
    table = CATALOGS.get(lang)
    out = text
    if table is not None:
        if text in table:
            out = table[text]
        else:
            for pattern, replacement in PATTERNS:
                if pattern.match(text):
                    out = pattern.sub(replacement, text)
                    break
    return out % params if params else out


def pick(user_language: str, accept: Any, cookie: str | None = None) -> str:
    """The user's language if set, else a cookie choice, else the browser's, else English."""
    for choice in (user_language, cookie):
        if choice in SUPPORTED:
            return str(choice)
    best = accept.best_match(SUPPORTED) if accept is not None else None
    return best or DEFAULT
