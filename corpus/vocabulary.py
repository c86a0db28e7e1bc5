"""The editor's tag vocabulary and the path rules that label packaged audio with it.

Tags are what sound editors search and tag by (footsteps, doors, gunshots, room tone ...), each
in one *family* (speech / music / instrument / drums / effects / ambience / noise) so that a
tagger can be scored "top-1 within the family". A tag may have a parent (kick -> drums,
speech_male -> speech); a label always carries its parents. Labels are multi-label: a clip
named ``car_crash`` is both ``vehicle`` and ``impact``.

Labels come from paths only (``label_path``): per package an ordered list of :class:`Rule`;
the first rule whose regex is found in the path inside the package decides. A rule gives fixed
tags and/or asks for the *keyword* tags of the file's name (and its folder's), e.g.
``wp_shotty_fire-01`` -> weapon. A rule with neither excludes the files on purpose (songs
sung by a character, duplicates reached through another path). A rule also names the *group*:
what must never straddle two splits (a voice pack, a unit, a drum kit, a recording).

The written-down table of every rule is :func:`rules_markdown` (docs/corpus-survey.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

FAMILIES = ("speech", "music", "instrument", "drums", "effects", "ambience", "noise")


@dataclass(frozen=True)
class Tag:
    id: str
    label: str  # what the editor sees
    family: str
    parent: str = ""


TAGS: tuple[Tag, ...] = (
    Tag("speech", "dialogue / speech", "speech"),
    Tag("speech_male", "dialogue, male voice", "speech", "speech"),
    Tag("speech_female", "dialogue, female voice", "speech", "speech"),
    Tag("vocal_fx", "shouts / screams / laughs / pain", "speech"),
    Tag("singing", "singing / vocals", "speech"),
    Tag("music", "music (mix)", "music"),
    Tag("keys", "piano / keys", "instrument"),
    Tag("guitar", "guitar", "instrument"),
    Tag("bass", "bass", "instrument"),
    Tag("strings", "strings", "instrument"),
    Tag("winds", "brass / winds", "instrument"),
    Tag("synth", "synth", "instrument"),
    Tag("drums", "drums / percussion", "drums"),
    Tag("kick", "kick drum", "drums", "drums"),
    Tag("snare", "snare / rim", "drums", "drums"),
    Tag("hihat", "hi-hat", "drums", "drums"),
    Tag("cymbal", "cymbal (crash / ride)", "drums", "drums"),
    Tag("tom", "tom", "drums", "drums"),
    Tag("footsteps", "footsteps", "effects"),
    Tag("impact", "impacts / hits / crashes", "effects"),
    Tag("door", "doors / gates", "effects"),
    Tag("vehicle", "vehicles / engines", "effects"),
    Tag("weapon", "weapons / gunshots", "effects"),
    Tag("explosion", "explosions", "effects"),
    Tag("machine", "machines / mechanical / tools", "effects"),
    Tag("ui", "UI / beeps / clicks", "effects"),
    Tag("alarm", "alarms / bells / horns", "effects"),
    Tag("whoosh", "whooshes / swings / magic", "effects"),
    Tag("fire", "fire / flames", "effects"),
    Tag("ambience", "room tone / ambience", "ambience"),
    Tag("water", "water", "ambience"),
    Tag("wind", "wind", "ambience"),
    Tag("rain", "rain / weather / thunder", "ambience"),
    Tag("crowd", "crowds / applause", "ambience"),
    Tag("animals", "birds / animals", "ambience"),
    Tag("noise", "noise / hum", "noise"),
    Tag("silence", "silence", "noise"),
)
TAG_IDS = tuple(t.id for t in TAGS)
BY_ID = {t.id: t for t in TAGS}

# Keyword sets: tag -> regex over the tokenised name ("WilhelmScream_01" -> "wilhelm scream 01").
EFFECT_KEYWORDS: dict[str, str] = {
    "footsteps": r"foot|\bsteps?\b|concstep|swimstep|\bwalk|\bboot\b",
    "door": r"\bdoors?\b|\bgates?\b|\bwindows?\b|\bchest\b",
    "explosion": r"expl|\bblast|\bbomb|\bboom\b|\bgrenade|\bdetonat|firecracker|firework",
    "weapon": r"\bguns?\b|gun\b|\bshot|shotty|\brifle|\bpistol|\blaser|lsr\b|\bcannon|"
    r"(lrg|med|sml|rapd)can\b|\bbow\b|\bcrossbow|\barrows?\b|\bsword|\bblade|\baxe\b|\bdagger|"
    r"\bknife|\bspear|\bmace\b|\bclub\b|\bmissile|\brocket|"
    r"\bsniper|\bflamethrower|\bmolotov|\bsling\b|\bhatchet|\bflail|\bstaff\b|\bbullet|\bplasma|\bmortar|flmthrow|"
    r"\bmg|\bsmg\b|\bricochet|richet|\bzap|\bphaser|\bgauss|\bcrossbow|\bdart",
    "impact": r"\bhits?\b|impact|\bbang|crash|\bthud|\bpunch|\bsmash|\bbreak|brk\b|\bbounce|"
    r"\bclang|\bclank|\bknock|\bdrop|\bfall|\bland\b|\bthump|\bslam|\bsplat|\bbump|thwack|"
    r"\bwhack|\bdebris|\bdamage|\bgib|\bsquish|\bstomp|\bstrike|\bfist|\bslap|\bwhip|"
    r"\bshatter|\bcrack|\bbrick\b|\banvil|\btink\b|\bchink",
    "vehicle": r"\bengine|\bcars?\b|\btruck|\bmotor|\bkart|\bjet\b|\bplane|\bheli|\btrain|"
    r"\bbus\b|\bship\b|\bboat|\btank\b|\bskid|\bbrake|\btires?\b|\bhover|hovmove|\bvtol|\brotor|"
    r"\bprop\b|\bexhaust|\bairship|\blocomotive|spaceship|\btraffic|\bairplane|\bferry|"
    r"\bturbine|\bstarter|\brpm\b|\bsqueal|\bstall\b|\boverspeed|"
    r"\bmaglev|\bmonorail|\baccel|revup|\bcranking|\btread\b|\btflight|\btland|\bthover",
    "water": r"water|\bsplash|\bsplosh|\bdrip|\bdroplet|bubbl|bubles|\bswim|\briver|\bcreek|"
    r"\bwaves?\b|\bsea\b|\bocean|\bdrown|\bgurp|\bwatr|h2o|\bgulp|\bharbou?r|\bfizz|underwater",
    "wind": r"wind(?!ow|ing|up)|\bbreeze|\bgust",
    "rain": r"\brain\b|\brains\b|\bthunder|\bstorm|\blightning|\bhail\b|\bweather",
    "fire": r"\bfire\b|\bflames?\b|\bburn|campfire|\bfireplace|\btorch|\blava|\bfry\b|\bsizzle|"
    r"\bsinge|blowtorch|furnace|\bflamer",
    "crowd": r"\bcrowd|applau|\bcheer|\baudience|\bchatter",
    "animals": r"\bbirds?\b|\bbird\d|\bbirdy|\bdogs?\b|\bbark\b|\bcats?\b|\bcows?\b|\bsheep|"
    r"\bhorses?\b|\bpigs?\b|\bducks?\b|\bchickens?\b|\brooster|\bowl\b|\bwolf|\blion\b|\bmonkey|"
    r"\bfrogs?\b|\bcrickets?|cycadas|cicada|\binsect|\bbees?\b|\banimal|\bcritter|\bgrowl|"
    r"\broar|\bmeow|\bmoo\b|\bneigh|\bchirp|\bgull|\bhawk|\belephant|\bele\b|\bsnake|\bdonkey|"
    r"\box\b|\bboar\b|\bcoyote|\bmoose|\bstag\b|\bdeer\b|\bbat\b",
    "machine": r"machine|\bsaw|benchsaw|chainsaw|\bdrill|\bmill\b|\bsawmill|hammer|\bsmith|"
    r"blacksmith|toolsmith|\bmechan|\bmech\b|\bgear\b|\bservo|\bpump|oilpump|\belevator|\blift\b|"
    r"\bconstruct|\bbuild\b|\bfactory|\bforge|\bweld|\bgrind|stonegrind|\bweav|\bmining|"
    r"\bmine\b|\bpickaxe|\bpneumatic|\bfan\b|\bdigger|goldspin|\bclock\b|\bcrank|\bgyro|"
    r"\blever|\bunlock|\blocked|\bturnkey|\bratchet|"
    r"\bhum\b|neonhum|powerhum|\bdrone|\bstonecutter|\bwoodcutting|\bsharpening|\bscythe",
    "ui": r"\bclick|\bbeep|\bbleep|\bbutton|\bbutn|\bmenu|\bselect\b|\binterface|\bblip|"
    r"\bping\b|\bnotify|\bmessage|\btick\b|\bbonus|\bcoins?\b|\bpickup|pkup\b|\bpowerup|"
    r"\bchat\b|\bcheckbox|\bslider|\bscroll|\berror|\bdialog|\bprompt|keyclick|\bconfirm|"
    r"\btada|\bvictory|\bsuccess|\bwin\b|\bdenied|\bcollect|"
    r"\bcancel|\bswitch|\bnotification|\blevelup|\blifeup|\bcash\b|\bmoney",
    "alarm": r"\balarm|\bsiren|\bbells?\b|savebell|\bhorns?\b|\bwhistle|\bklaxon|\bgong|"
    r"\bphone|\bring\b|\bbudik|\bcountdown|\bbuzzer|redalert|\bcrossing|\btimer|typewriterbell",
    "whoosh": r"\bwhoosh|\bswish|\bswoosh|\bwoosh|\bswing|\bthrow|\bwhizz?|\bflyby|buletby|"
    r"\bjump|\bhop\b|\btrampoline|\bboing|\bimpulse|\btele(port|in|out)|\bjumppad|"
    r"\bforcefield|\bregenerat|\bflap|\bmiss\b|\bteleport|\bportal|\bmagic|\bspell|\bwarp|\bappear|\bvanish|\bspawn",
    "vocal_fx": r"\bscream|\bshout|\byell|\blaugh|\bgiggle|\bgrunt|\bpain|\bdeath\b|\bdie\b|"
    r"\bdying|\bcry\b|\bouch|\bhurt\b|\bsigh\b|\bcough|\bgasp|\bmoan|\bgroan|\bhaha|\bargh|"
    r"\bwilhelm|\byipee|\bohno|\bsnore|\bburp|\bhiccup|\bsneeze|\byawn|\bow\b|\booff",
    "music": r"\bmusic\b|\btheme\b|\bjingle|\bfanfare|\bmelody",
    "ambience": r"\bambien|\bamb\b|\bnight|\bmorning|\bnightime|\bsunny day|\bdesertday|"
    r"\bforest\b|\bcavedrip",
    # Not "hiss": Wesnoth's hiss*.wav are creatures hissing (the audit showed them as noise).
    "noise": r"\bnoise\b|radionoise|\bstatic\b|test signal",
    # Only the word itself: "MarketEmpty", "use_nothing", "trash-empty" are sounds (audit).
    "silence": r"\bsilence\b",
}
# A tag that makes another keyword hit a false friend: "gun_fire" is a shot, not flames;
# a machine or vehicle "die"s in an explosion, not with a voice; "factory noise" is a machine.
CONFLICTS: dict[str, tuple[str, ...]] = {
    "weapon": ("fire", "rain"),
    "machine": ("vocal_fx", "noise"),
    "vehicle": ("vocal_fx",),
    "speech": ("vocal_fx",),
}
INSTRUMENT_KEYWORDS: dict[str, str] = {
    "keys": r"piano|klavir|organ|harpsichord|xylo|marimba|vibraphone|celesta|glocken",
    "guitar": r"guitar|banjo|ukulele|mandolin|sitar",
    "strings": r"violin|viola|cello|contrabass|\bharp\b|\bstrings?\b",
    "winds": r"flute|clarinet|sax|trumpet|trombone|tuba|\bhorn\b|oboe|bassoon|accordion|"
    r"harmonica|bagpipe|recorder",
    "drums": r"drum|snare|cymbal|tambourine|maraca|bongo|castanet|timpani|triangle|conga|djembe",
}
DRUM_KEYWORDS: dict[str, str] = {
    "kick": r"kick|bass ?drum|bassdrum|\bbd\b|\bkik",
    "snare": r"snare|\brim|side stick|\bsd\b|\bstick\b",
    "hihat": r"hi ?hat|hihat|\bhh\b|\bhats?\b|\bohh\b",
    "cymbal": r"cymbal|crash|ride|china|splash|\bcup\b",
    "tom": r"\btoms?\b|tom ?(hi|mid|lo)|tomhi",
}
KEYWORD_SETS = {"effects": EFFECT_KEYWORDS, "instruments": INSTRUMENT_KEYWORDS}


@dataclass(frozen=True)
class Rule:
    """``pattern`` (regex searched in the path inside the package) -> ``tags``, plus the keyword
    tags of the name when ``keywords`` names a set ("effects", "instruments", "drums").
    ``group``: "file" (each recording), "dir" (its folder), "stem" (name without trailing
    digits), "up2" (the folder's parent) or "re:REGEX" (its first capture group)."""

    pattern: str
    tags: tuple[str, ...] = ()
    keywords: str = ""
    group: str = "file"
    lang: str = ""
    note: str = ""


@dataclass(frozen=True)
class Label:
    tags: tuple[str, ...]  # with parents, in vocabulary order; empty = not used
    group: str  # "PACKAGE:..."
    lang: str
    rule: str  # the pattern that decided
    excluded: bool = False  # a rule leaves these out on purpose


def R(  # noqa: N802 - a short name keeps the rule tables readable
    pattern: str, *tags: str, kw: str = "", group: str = "file", lang: str = "", note: str = ""
) -> Rule:
    """Shorthand for the tables below."""
    return Rule(pattern, tuple(tags), kw, group, lang, note)


FX = "effects"
# GM programs by family for freepats' Tone_000/NNN_*.pat (0-based; as corpus.tags.GM_FAMILIES,
# which the tagging corpus uses for its fluidsynth renders; programs left out there are
# left out here).
GM_PATCH_RULES = (
    R(r"/Tone_000/0(0[0-7]|1[6-9]|2[0-3])_", "keys", group="file"),
    R(r"/Tone_000/0(2[4-9]|3[01])_", "guitar"),
    R(r"/Tone_000/0(3[2-9])_", "bass"),
    R(r"/Tone_000/0(4[0-5]|4[89])_", "strings"),
    R(r"/Tone_000/0(5[6-9]|6[01]|6[4-9]|7\d)_", "winds"),
    R(r"/Tone_000/0(8\d|9[0-5])_", "synth"),
    R(r"/Tone_000/", note="chromatic percussion, choir, ethnic, sound effects: ambiguous"),
    R(r"/Drum_000/", "drums", kw="drums", group="file"),
)

PACKAGE_RULES: dict[str, tuple[Rule, ...]] = {
    "alsa-utils": (
        R(r"/Noise\.wav$", "noise"),
        R(r"/sounds/alsa/", "speech", group="dir", lang="en"),
    ),
    "sound-theme-freedesktop": (
        R(r"/audio-channel-", "speech", group="re:(audio-channel)", lang="en"),
        R(r"/audio-test-signal", "noise"),
        R(r"/stereo/", "ui", kw=FX, group="stem"),
    ),
    "fillets-ng-data": (
        R(r"/music/", "music"),
        R(r"/sound/(elk|warcraft)/en/", "speech", group="dir", note="German / Russian words"),
        R(r"/sound/share/", kw=FX, group="stem"),
        R(r"/sound/linux/en/", "ui", group="dir", note="keyboard typing"),
        R(r"/sound/[^/]+/en/", kw=FX, group="stem"),
    ),
    # The two fish of Fish Fillets: -m- the small one, -v- the big one; one actor each.
    "fillets-ng-data-cs": (
        R(r"/sound/share/.*cs/sp-", "vocal_fx", kw=FX, group="stem"),
        R(r"/cs/[^/]*-m-", "speech", group="re:/cs/[^/]*-(m)-", lang="cs"),
        R(r"/cs/[^/]*-v-", "speech", group="re:/cs/[^/]*-(v)-", lang="cs"),
        R(r"/cs/", "speech", group="re:/cs/[^-/]+-([^-/]+)-", lang="cs"),
    ),
    "hedgewars-data": (
        R(r"/Sounds/voices/Singer/", "singing", group="dir", note="one voice, sung lines"),
        R(r"/Sounds/voices/[^/]+_(es)/", "speech", group="dir", lang="es"),
        R(r"/Sounds/voices/[^/]+_(pl)/", "speech", group="dir", lang="pl"),
        R(r"/Sounds/voices/[^/]+_(ru)/", "speech", group="dir", lang="ru"),
        R(r"/Sounds/voices/Russian/", "speech", group="dir", lang="en", note="accent"),
        R(r"/Sounds/voices/[^/]+_uk/", "speech", group="dir", lang="uk"),
        R(r"/Sounds/voices/", "speech", group="dir", lang="en"),
        R(r"/Music/", "music"),
        R(r"/Sounds/[1-9][A-G]\.ogg$", "keys", group="re:(/Sounds/)[1-9]"),
        R(r"/Sounds/", kw=FX, group="stem"),
    ),
    "wesnoth-1.16-music": (R(r"/music/", "music"),),
    "wesnoth-1.16-data": (
        R(r"/ambient/wardrums", "drums"),
        R(r"/ambient/birds", "ambience", "animals"),
        R(r"/ambient/", "ambience", kw=FX),
        R(r"/horn-signals/", "winds", "alarm", group="dir"),
        R(r"/sounds/.*(_|-)(ack|select|hello|yes)\d*\.", "speech", group="stem"),
        R(r"/sounds/", kw=FX, group="stem"),
    ),
    "warzone2100-music": (R(r"/music/", "music"),),
    "warzone2100-data": (
        R(r"/audio/sfx/misc/silence", "silence"),
        R(r"/audio/sfx/", kw=FX, group="stem"),
        R(r"/audio/(multi|radclick)/", kw=FX, group="stem"),
        R(r"/audio/nexus/laugh", "vocal_fx", group="dir"),
        R(r"/audio/taunts/", "speech", "speech_male", group="dir", lang="en"),
        R(r"/audio/", "speech", group="up2", lang="en", note="mission / unit messages"),
        R(r"/sequenceaudio/", "speech", group="dir", lang="en"),
    ),
    "megaglest-data": (
        R(r"/music/", "music"),
        R(r"/tilesets/[^/]+/sounds/(rain)\.", "ambience", "rain", group="stem"),
        R(r"/tilesets/[^/]+/sounds/(wind)\.", "ambience", "wind", group="stem"),
        R(r"/tilesets/[^/]+/sounds/(day|night|nightime|hell|desertday|sunny_day)\.", "ambience"),
        R(r"/tilesets/[^/]+/sounds/", "animals", kw=FX, group="stem"),
        R(r"/water_sounds/", "water", group="dir"),
        R(r"/menu/sound/", "ui", group="dir"),
        # Unit acknowledgements are spoken lines; their attack / die sounds are effects.
        R(r"/sounds?/([^/]*_)?(ack|select|sel|ready|yes|hello)\d*\.", "speech", group="dir"),
        R(r"/units/(sheep|wild_sow|elephant|snake_basket)/", "animals", kw=FX, group="dir"),
        R(r"/sounds?/[^/]*attack", "weapon", kw=FX, group="dir", note="unit attacks"),
        R(r"/sounds?/", kw=FX, group="dir"),
    ),
    "openarena-data": (
        R(r"/sound/player/footsteps/splash", "footsteps", "water", group="dir"),
        R(r"/sound/player/footsteps/", "footsteps", group="dir"),
        R(r"/sound/voices/", "speech", "speech_male", group="dir", lang="en"),
        R(r"/sound/player/announcer/", "speech", group="dir", lang="en"),
        R(r"/sound/player/[^/]+/(death|pain|gasp|drown|fall|taunt)", "vocal_fx", group="dir"),
        R(r"/sound/player/[^/]+/jump", "vocal_fx", group="dir"),
        R(r"/sound/movers/doors/", "door", group="dir"),
        R(r"/sound/movers/", "machine", group="dir"),
        R(r"/sound/weapons/(proxmine|grenade|rocket)/", "weapon", kw=FX, group="dir"),
        R(r"/sound/weapons/", "weapon", group="dir"),
        R(r"/sound/world/ambient/", "ambience", group="dir"),
        R(r"/sound/misc/silence", "silence"),
        R(r"/sound/(misc|items|feedback)/", "ui", kw=FX, group="stem"),
        R(r"/sound/", kw=FX, group="stem"),
    ),
    "openttd-opensfx": (R(r"\.cat/", kw=FX),),
    "trigger-rally-data": (
        R(r"/codriver/paula/", "speech", "speech_female", group="dir", lang="en"),
        R(r"/codriver/tim/", "speech", "speech_male", group="dir", lang="en"),
        R(r"/codriver/", "speech", group="dir", lang="en"),
        R(r"/sounds/(engine|gear)\.", "vehicle"),
        R(r"/sounds/", kw=FX),
    ),
    "teeworlds-data": (
        R(r"/audio/music_", "music"),
        R(r"/audio/vo_", "vocal_fx", kw=FX, group="stem"),
        R(r"/audio/foley_foot", "footsteps", group="stem"),
        R(r"/audio/wp_", "weapon", kw=FX, group="stem"),
        R(r"/audio/", kw=FX, group="stem"),
    ),
    "freeciv-data": (R(r"/stdmusic/", "music"), R(r"/stdsounds/", kw=FX, group="stem")),
    "freedroidrpg-data": (
        R(r"/sound/music/", "music"),
        R(r"/titles/", "music"),
        R(r"/tux_ingame_comments/", "speech", group="dir", lang="en"),
        R(r"/bot_sounds/voice_samples/", "speech", group="dir", lang="en", note="robot voices"),
        R(r"/bot_sounds/", "speech", group="dir", lang="en"),
        R(r"/bullets/", "weapon", group="dir"),
        R(r"/sound/effects/", kw=FX, group="stem"),
    ),
    "flightgear-data-base": (
        R(r"/Sounds/tcas/female/", "speech", "speech_female", group="dir", lang="en"),
        R(r"/Sounds/mk-viii/", "speech", group="dir", lang="en", note="GPWS call-outs"),
        R(r"/checklist", "speech", group="dir", lang="en"),
        R(r"/intro\.mp3$", "music"),
        R(r"/(rain|rain-windshield)\.wav$", "rain"),
        R(r"/Instruments-3d/", "ui", "alarm", group="dir"),
        R(r"/Sounds/", kw=FX, group="stem"),
    ),
    "gcompris-qt-data": (
        R(r"/explore_world_music/", "music"),
        R(r"/intro\.ogg$", "music"),
        R(r"/instruments/resource/", kw="instruments", group="stem"),
        R(r"/explore_(farm|world)_animals/", "animals", group="stem"),
        R(r"/melody/resource/xylofon", "keys", group="dir"),
        R(r"/ballcatch/|/tuxok|/youcannot", "speech", group="stem"),
        R(r"\.rcc/", kw=FX, group="stem"),
    ),
    "lincity-ng-data": (R(r"/music/", "music"), R(r"/sounds/", kw=FX, group="stem")),
    "pingus-data": (
        R(r"/music/", "music"),
        R(r"/sounds/(goodidea|letsgo|ohno|yipee)\.", "speech", group="dir"),
        R(r"/sounds/", kw=FX, group="stem"),
    ),
    "redeclipse-data": (
        R(r"/sounds/music/|/sounds/(theme|original)|/maps/", "music"),
        R(r"/sounds/ambience/morph/ambient", "ambience", group="dir"),
        R(r"/sounds/ambience/", "ambience", kw=FX, group="stem"),
        R(r"/sounds/voice/", "speech", group="dir", lang="en"),
        R(r"/sounds/announcer/", "speech", group="dir", lang="en"),
        R(r"/sounds/player/(death|pain)", "vocal_fx", group="stem"),
        R(r"/sounds/weapons/[^/]+/(notify|reload|switch|power)", "weapon", "ui", group="dir"),
        R(r"/sounds/weapons/", "weapon", kw=FX, group="dir"),
        R(r"/sounds/", kw=FX, group="stem"),
    ),
    "supertux-data": (
        R(r"/music/", "music"),
        R(r"/speech/", "speech", group="dir", lang="en"),
        R(r"/sounds/", kw=FX, group="stem"),
    ),
    "supertuxkart-data": (
        R(r"/music/|/tracks/[^/]+/[A-Z][^/]*\.ogg$|/tracks/cave/", "music"),
        R(r"/nolok_speech", "speech"),
        R(r"/(sfx|tracks|karts|library)/", kw=FX, group="stem"),
    ),
    "tuxpaint-data": (
        R(r"/sounds/(tuxok|youcannot|areyousure)", "speech"),
        R(r"/sounds/", kw=FX, group="stem"),
    ),
    "widelands-data": (
        R(r"/music/", "music"),
        R(r"/sound/(animals|farm)/", "animals", kw=FX, group="stem"),
        R(r"/critters/", "animals", group="dir"),
        R(r"/sound/(military|other)/|/sound/message|/sound/lobby|/sound/click", "ui", kw=FX),
        R(r"/sound/", "machine", kw=FX, group="stem", note="work-site sounds"),
    ),
    "hydrogen-drumkits": (
        R(r"/drumkit\.xml/", "drums", kw="drums", group="re:/drumkits/([^/]+)/"),
        R(r"/drumkits/", note="reached through extracted/ with drumkit.xml's names"),
    ),
    "freepats": GM_PATCH_RULES,
}


# --------------------------------------------------------------------------------------------


def tokens(text: str) -> str:
    """Lower-case words of a name: camelCase and digits split, punctuation to spaces."""
    text = re.sub(r"([a-z])([A-Z])|([A-Z])([A-Z][a-z])", r"\1\3 \2\4", text)
    text = re.sub(r"([A-Za-z])(\d)|(\d)([A-Za-z])", r"\1\3 \2\4", text)
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def keyword_tags(text: str, kind: str = "effects") -> tuple[str, ...]:
    """The tags whose keywords occur in ``text`` (a name or folder), conflicts resolved."""
    words = tokens(text)
    if kind == "drums":
        hits = [t for t, p in DRUM_KEYWORDS.items() if _compiled(p).search(words)]
        return tuple(hits[:1])  # one drum per instrument ("crash" in "snare crash" is rare)
    found = {t for t, p in KEYWORD_SETS[kind].items() if _compiled(p).search(words)}
    for tag, drops in CONFLICTS.items():
        if tag in found:
            found -= set(drops)
    return tuple(sorted(found, key=TAG_IDS.index))


def expand(tags: tuple[str, ...] | list[str] | set[str]) -> tuple[str, ...]:
    """Tags plus their parents, unique, in vocabulary order."""
    full = set(tags) | {BY_ID[t].parent for t in tags if BY_ID[t].parent}
    return tuple(t for t in TAG_IDS if t in full)


def _group(rule: Rule, package: str, relpath: str) -> str:
    parent, name = relpath.rsplit("/", 1)
    if rule.group == "dir":
        key = parent
    elif rule.group == "up2":
        key = parent.rsplit("/", 1)[0]
    elif rule.group == "stem":
        key = parent + "/" + re.sub(r"([-_ ]?\d+[a-z]?)?$", "", name.split(".", 1)[0])
    elif rule.group.startswith("re:"):
        found = re.search(rule.group[3:], relpath)
        key = found.group(1) if found else relpath
    else:
        key = relpath
    return f"{package}:{key}"


def label_path(package: str, relpath: str) -> Label | None:
    """The label of a packaged file by the rules; None when no rule of the package matches.
    ``Label.tags`` is empty when the matching rule finds nothing (keywords missed) or excludes
    the file on purpose (``excluded``)."""
    for rule in PACKAGE_RULES.get(package, ()):
        if not _compiled(rule.pattern).search(relpath):
            continue
        tags = list(rule.tags)
        if rule.keywords:
            parent, name = relpath.rsplit("/", 1)
            folder, stem = parent.rsplit("/", 1)[-1], name.split(".", 1)[0]
            if rule.keywords == "drums":
                found = keyword_tags(folder, "drums") or keyword_tags(stem, "drums")
            else:
                found = keyword_tags(f"{folder} {stem}", rule.keywords)
            tags += [t for t in found if t not in tags]
        for tag, drops in CONFLICTS.items():
            if tag in tags:
                tags = [t for t in tags if t not in drops or t in rule.tags]
        excluded = not rule.tags and not rule.keywords
        return Label(
            expand(tags), _group(rule, package, relpath), rule.lang, rule.pattern, excluded
        )
    return None


def family_of(tag: str) -> str:
    return BY_ID[tag].family


def rules_markdown() -> str:
    """The vocabulary and every package's rules as markdown tables (the written-down mapping)."""
    lines = ["| tag | label | family | parent |", "|---|---|---|---|"]
    lines += [f"| `{t.id}` | {t.label} | {t.family} | {t.parent} |" for t in TAGS]
    lines += ["", "| package | path regex | tags | keywords | group | lang | note |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for package, rules in sorted(PACKAGE_RULES.items()):
        for r in rules:
            tags = ", ".join(r.tags) or ("(excluded)" if not r.keywords else "")
            pattern = r.pattern.replace("|", "\\|")
            group = r.group.replace("|", "\\|")
            lines.append(
                f"| {package} | `{pattern}` | {tags} | {r.keywords} | `{group}` | {r.lang} "
                f"| {r.note} |"
            )
    return "\n".join(lines) + "\n"
