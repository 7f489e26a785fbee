#!/usr/bin/env python
"""Generate felix_train/data/builtin/felix-ner-quickstart.jsonl, the quickstart NER dataset.

The data is synthetic and written for this project (not derived from any public
dataset): a seeded template grammar over hand-written lexicons. Sentences span
several registers (news, chat, business, sport, travel, science), lengths and
positions, and some contain no entities at all.

Labels (every record lists all five; an empty list means "none of this type"):

* person        a person's name, without titles (``Dr. Amara Okafor`` -> ``Amara Okafor``);
                full name, first name or surname alone.
* organization  a named company, team, university, agency, newspaper or NGO.
* location      a named city, country, region, island, mountain range, river or landmark.
* date          an absolute calendar expression: ``14 March 2023``, ``March 14``,
                ``June 2022``, ``2019``, ``Friday``, ``2024-05-17``, ``3rd of May``
                (no leading ``on``/``the``; relative words such as ``tomorrow`` are not dates).
* product       a named commercial product: devices, software, vehicles, games, drinks, ...

Every mention is an exact substring of ``input`` and occurs there exactly once
(token-wise, case-insensitively, the way gliner2 locates it); mentions are listed
in order of occurrence.

Usage:
    python scripts/make_quickstart_ner.py [--seed 20240611] [--n 900] [--out PATH] [--stats]

Reruns with the same seed reproduce the file byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

LABELS = ("person", "organization", "location", "date", "product")
DEFAULT_SEED = 20240611
DEFAULT_N = 900
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "felix_train" / "data" / "builtin" / "felix-ner-quickstart.jsonl"


def words(block: str) -> list[str]:
    """Split a lexicon block on newlines/commas; keep order, drop blanks and duplicates."""
    seen: dict[str, None] = {}
    for part in re.split(r"[\n,]", block):
        part = part.strip()
        if part and part not in seen:
            seen[part] = None
    return list(seen)


# ---------------------------------------------------------------------------
# Lexicons (hand-written; names avoid words that double as places or common words)
# ---------------------------------------------------------------------------

FIRST_NAMES = words("""
Amara, Liam, Sofia, Mateo, Priya, Kenji, Olga, Tomasz, Fatima, Diego, Ingrid, Kwame, Mei, Rafael,
Aisha, Henrik, Lucia, Arjun, Chloe, Dmitri, Nadia, Oscar, Yuki, Elena, Samuel, Zara, Ibrahim,
Hannah, Marco, Leila, Noah, Anika, Pablo, Greta, Tariq, Emma, Javier, Sunita, Felix, Ayumi,
Bogdan, Clara, Emeka, Freya, Gustavo, Hiroshi, Isabel, Jonas, Katarzyna, Lars, Miriam, Nikolai,
Olivia, Pedro, Rania, Stefan, Thandiwe, Ursula, Viktor, Wanjiru, Xavier, Yasmin, Zoltan, Adele,
Bruno, Camila, Dario, Esther, Farid, Gabriela, Hugo, Ines, Jakub, Kofi, Lena, Magnus, Nora,
Omar, Paulina, Quentin, Rosa, Sanjay, Tove, Umar, Valentina, Wei, Yara, Anders, Beatriz, Chidi,
Daniela, Erik, Fiona, Goran, Helga, Ivan, Julia, Kamala, Lorenzo, Maya, Nikhil, Orla, Pieter,
Renata, Soren, Tatiana, Vikram, Wilhelmina, Ximena, Youssef, Zainab, Alejandro, Bianca, Cyrus,
Dagny, Elif, Fernando, Gita, Hamza, Ilse, Joaquin, Keiko, Leon, Malika, Nils, Ozan, Petra,
Rohan, Sakura, Teodor, Uma, Vera, Wiktor, Yosef, Zofia, Agnes, Bilal, Consuelo, Declan, Eun-ji,
Farah, Gideon, Hana, Imran, Jorge, Kaito, Linnea, Mehmet, Naomi, Obinna, Pilar, Rashid, Signe,
Tobias, Ulrike, Valeria, Yusuf, Aurelio, Britta, Cosmin, Dalia, Emil, Filipa, Grigor, Halima,
Idris, Jana, Kasper, Lucinda, Mirela, Noor, Otto, Patrice, Radek, Saoirse, Thiago, Vesna, Wren
""")

LAST_NAMES = words("""
Okafor, Lindqvist, Moreno, Tanaka, Kowalski, Haddad, Fernandes, Nakamura, Petrov, Mensah,
Schneider, Chowdhury, Rossi, Novak, Adeyemi, Johansson, Castillo, Watanabe, Ivanova, Boateng,
Hoffmann, Iyer, Bianchi, Dvorak, Ozturk, Larsen, Guerrero, Yamamoto, Sokolov, Asante, Richter,
Banerjee, Ricci, Horvat, Kaya, Nielsen, Vargas, Suzuki, Popescu, Owusu, Keller, Menon, Greco,
Kovacs, Demir, Andersen, Rojas, Kobayashi, Volkov, Appiah, Wagner, Pillai, Conti, Svoboda,
Aydin, Halvorsen, Medina, Matsumoto, Morozov, Nwosu, Becker, Rao, Marino, Blazek, Celik,
Eriksen, Salazar, Inoue, Lebedev, Danso, Vogel, Kapoor, Esposito, Zielinski, Arslan, Berg,
Navarro, Kimura, Orlov, Achebe, Krause, Malhotra, Fontana, Wojcik, Yilmaz, Holm, Delgado,
Hayashi, Fedorov, Eze, Brandt, Sharma, Moretti, Lewandowski, Sahin, Dahl, Pacheco, Shimizu,
Kuznetsov, Oyelaran, Hartmann, Verma, Gallo, Mazur, Polat, Strand, Cabrera, Ishikawa, Pavlov,
Okonkwo, Lange, Nair, Romano, Kaczmarek, Koc, Lund, Ortega, Mori, Sorokin, Ogunleye, Fischer,
Reddy, Ferrari, Grabowski, Aksoy, Bakker, Molina, Fujita, Zaitsev, Chukwu, Zimmermann, Desai,
Caruso, Pawlak, Tekin, Visser, Herrera, Okada, Belov, Obi, Schulz, Joshi, Rinaldi, Sikora,
O'Brien, MacLeod, Gallagher, Fitzgerald, Whitaker, Ashworth, Pemberton, Thornbury, Calloway,
Drummond, Hargreaves, Kingsley, Lockhart, Merriweather, Prescott, Radcliffe, Sutherland
""")

CITIES = words("""
Lisbon, Nairobi, Osaka, Krakow, Montreal, Valparaiso, Tbilisi, Accra, Rotterdam, Hanoi,
Edinburgh, Marrakesh, Bergen, Cusco, Adelaide, Bilbao, Kyoto, Lagos, Gdansk, Porto, Seville,
Reykjavik, Tallinn, Bratislava, Ljubljana, Zagreb, Sarajevo, Thessaloniki, Izmir, Beirut,
Amman, Muscat, Doha, Karachi, Pune, Chennai, Kathmandu, Colombo, Dhaka, Yangon, Chiang Mai,
Da Nang, Cebu, Surabaya, Busan, Sapporo, Nagoya, Taipei, Shenzhen, Chengdu, Ulaanbaatar,
Almaty, Tashkent, Baku, Yerevan, Odesa, Lviv, Vilnius, Riga, Helsinki, Uppsala, Aarhus,
Gothenburg, Trondheim, Hamburg, Leipzig, Munich, Zurich, Geneva, Lyon, Marseille, Bordeaux,
Toulouse, Nantes, Antwerp, Ghent, Utrecht, Eindhoven, Cork, Galway, Belfast, Cardiff, Leeds,
Bristol, Glasgow, Manchester, Liverpool, Valencia, Malaga, Granada, Turin, Bologna, Naples,
Palermo, Florence, Verona, Salzburg, Graz, Innsbruck, Brno, Budapest, Debrecen, Cluj-Napoca,
Timisoara, Plovdiv, Varna, Skopje, Tirana, Podgorica, Split, Dubrovnik, Casablanca, Tunis,
Algiers, Cairo, Alexandria, Khartoum, Addis Ababa, Kampala, Kigali, Dar es Salaam, Zanzibar City,
Lusaka, Harare, Maputo, Durban, Cape Town, Windhoek, Gaborone, Dakar, Abidjan, Kumasi, Ibadan,
Douala, Kinshasa, Luanda, Antananarivo, Port Louis, Perth, Brisbane, Hobart, Wellington,
Christchurch, Auckland, Suva, Honolulu, Anchorage, Seattle, Portland, Denver, Phoenix,
Albuquerque, Houston, Dallas, Nashville, Atlanta, Miami, Pittsburgh, Baltimore, Boston,
Philadelphia, Detroit, Chicago, Minneapolis, Milwaukee, Toronto, Ottawa, Quebec City,
Halifax, Winnipeg, Calgary, Vancouver, Monterrey, Guadalajara, Oaxaca, Merida, Havana,
San Juan, Panama City, Medellin, Cartagena, Quito, Guayaquil, Lima, Arequipa, La Paz,
Santiago, Mendoza, Cordoba, Rosario, Montevideo, Asuncion, Recife, Salvador, Curitiba,
Porto Alegre, Belo Horizonte, Manaus, Fortaleza
""")

COUNTRIES = words("""
Portugal, Kenya, Japan, Poland, Canada, Chile, Georgia, Ghana, the Netherlands, Vietnam,
Scotland, Morocco, Norway, Peru, Australia, Spain, Nigeria, Iceland, Estonia, Slovakia,
Slovenia, Croatia, Greece, Turkey, Lebanon, Oman, Qatar, Pakistan, India, Nepal, Sri Lanka,
Bangladesh, Myanmar, Thailand, the Philippines, Indonesia, South Korea, Taiwan, Mongolia,
Kazakhstan, Uzbekistan, Azerbaijan, Armenia, Ukraine, Lithuania, Latvia, Finland, Sweden,
Denmark, Germany, Switzerland, France, Belgium, Ireland, Wales, Italy, Austria, Hungary,
Romania, Bulgaria, Albania, Montenegro, Tunisia, Egypt, Ethiopia, Uganda, Rwanda, Tanzania,
Zambia, Zimbabwe, Mozambique, South Africa, Namibia, Botswana, Senegal, Cameroon, Angola,
Madagascar, Mauritius, New Zealand, Fiji, Mexico, Cuba, Colombia, Ecuador, Bolivia,
Argentina, Uruguay, Paraguay, Brazil, Jamaica, Costa Rica, Guatemala, Luxembourg, Malta
""")

REGIONS = words("""
Patagonia, Bavaria, Tuscany, Andalusia, Catalonia, Brittany, Provence, Silesia, Transylvania,
Lapland, the Balkans, Scandinavia, Siberia, Kashmir, Punjab, Bengal, Hokkaido, Okinawa,
Queensland, Tasmania, Ontario, Alberta, British Columbia, Nova Scotia, Yukon, Texas, California,
Oregon, Vermont, Montana, Alaska, Sardinia, Sicily, Corsica, Crete, Bali, Borneo, Sumatra,
the Sahara, the Alps, the Andes, the Himalayas, the Pyrenees, the Rockies, the Carpathians,
the Danube, the Mekong, the Nile, the Rhine, the Amazon basin, the Outer Hebrides,
the Lake District, the Atacama Desert, the Serengeti, Lake Titicaca, Lake Victoria
""")

LANDMARKS = words("""
Table Mountain, Mount Kilimanjaro, Machu Picchu, the Eiffel Tower, Mount Fuji, Angkor Wat,
the Acropolis, Central Park, Hyde Park, the Golden Gate Bridge, Victoria Falls, Uluru,
Mont Blanc, the Matterhorn, Ha Long Bay, Iguazu Falls, the Great Barrier Reef
""")

ORG_PREFIX = words("""
Northwind, Bluepeak, Ironbridge, Kestrel, Solvanta, Brightwater, Redfern, Altamira, Corvid,
Helix, Meridian, Quantix, Larkspur, Everhart, Stonegate, Vireo, Pinecrest, Obsidian, Tidewater,
Halcyon, Lumina, Copperleaf, Silverline, Greystone, Novaris, Ardent, Cobalt, Westmark, Fairhaven,
Blackthorn, Zephyra, Orion, Sequoia, Amberly, Harrow, Kinetica, Marlowe, Wrenfield, Astera,
Driftwood, Foxglove, Granite Peak, Highmoor, Juniper, Keystone, Lodestar, Mistral, Nordholm,
Oakhurst, Quillon, Rosewood, Saltmarsh, Thornfield, Umbra, Vantage, Windrose, Yarrow
""")

ORG_INDUSTRY = words("""
Labs, Systems, Logistics, Bank, Energy, Foods, Media, Pharmaceuticals, Airlines, Robotics,
Capital, Motors, Insurance, Analytics, Biotech, Telecom, Shipping, Textiles, Semiconductors,
Software, Health, Mining, Brewing, Publishing, Games, Aerospace, Retail, Solar, Dynamics, Studios
""")

ORG_LEGAL = words("Group, Holdings, Ltd, AG, GmbH, SA, Corp, Partners, Co")

REAL_COMPANIES = words("""
Google, Microsoft, Siemens, Toyota, Spotify, Airbus, Samsung, Nokia, Ericsson, Philips, Unilever,
Nestle, Volvo, IKEA, Heineken, Adidas, Puma, Lego, Maersk, Novartis, Roche, Bayer, Shell, Netflix,
Amazon, Intel, Nvidia, IBM, Oracle, Salesforce, Pfizer, Moderna, Tesla, SpaceX, Boeing, Sony,
Nintendo, Panasonic, Honda, Hyundai, Alibaba, Tencent, Infosys, Tata Motors, Safaricom, MTN,
Ecobank, Petrobras, Embraer, Mercado Libre, Zalando, Shopify, Rakuten, Grab, Flipkart, Jumia
""")

INTL_ORGS = words("""
the United Nations, the World Health Organization, the European Central Bank, the Red Cross,
Amnesty International, Greenpeace, Oxfam, UNICEF, the IMF, the World Bank, Interpol, the OECD,
the African Union, the European Commission, Doctors Without Borders, the WTO
""")

SCIENCE_ORGS = words("""
NASA, CERN, the European Space Agency, the Max Planck Society, the Royal Society, JAXA,
the Wellcome Trust, the Pasteur Institute, the Alan Turing Institute
""")

REAL_UNIVS = words("""
MIT, Stanford University, Oxford University, the Sorbonne, ETH Zurich, the University of Tokyo,
Harvard, Imperial College London, McGill University, the University of Cape Town, KU Leuven
""")

REAL_TEAMS = words("""
Real Madrid, FC Barcelona, Ajax, Bayern Munich, Manchester United, the Boston Celtics,
the Chicago Bulls, the New Zealand All Blacks, Juventus, Boca Juniors, Galatasaray, Benfica
""")

AIRLINES = words("""
Lufthansa, KLM, Emirates, Qantas, Ryanair, easyJet, Aer Lingus, Air Canada, LATAM, Ethiopian Airlines,
Turkish Airlines, Kenya Airways, Iberia, Finnair, SAS, Air India, Vietnam Airlines, Icelandair
""")

NEWS_ORGS = words("""
Reuters, the BBC, the Financial Times, The Guardian, Le Monde, Al Jazeera, the Associated Press,
the New York Times, Bloomberg, The Economist, Der Spiegel, El Pais, the Nikkei, the Irish Times
""")

TEAM_NICKNAMES = words("""
Falcons, Rovers, United, Wanderers, Athletic, Harriers, Comets, Titans, Mariners, Lions,
Owls, Rangers, Stallions, Storm, Vikings, Pirates, Hawks, Tigers, Wolves, Sharks
""")

UNIV_FORMS = ["University of {city}", "{city} Institute of Technology", "{last} College",
              "{city} School of Economics", "{last} Institute", "{city} Polytechnic"]

AGENCY_FORMS = ["{city} Health Authority", "{city} Port Authority", "{country} Space Agency",
                "{city} City Council", "{country} Football Federation", "{city} Chamber of Commerce",
                "{city} Daily News", "The {city} Herald", "{city} Metro Transit"]

PRODUCT_BRANDS = words("""
Zephyr, Nimbus, Pixelwave, Aurora, Vortex, Quasar, Lumen, Tessera, Halo, Strato, Kairo,
Velox, Orbit, Nova, Echo, Prism, Sonic, Apex, Vela, Cirrus, Flux, Atlas, Ember, Nexa,
Solace, Krypton, Tundra, Monsoon, Polaris, Terra
""")

PRODUCT_LINES = words("Pro, Max, Air, Ultra, Mini, Lite, Plus, Edge, Go, Studio, Fold, Neo, Sport, Prime")

REAL_PRODUCTS = {
    "device": words("""
iPhone 15, iPhone 14 Pro, Galaxy S24, Galaxy Tab S9, Pixel 8, Pixel Watch 2, iPad Air, MacBook Pro,
MacBook Air, Surface Laptop 5, ThinkPad X1 Carbon, PlayStation 5, Xbox Series X, Nintendo Switch,
Steam Deck, Kindle Paperwhite, Apple Watch Ultra, AirPods Pro, Fairphone 5, Raspberry Pi 5,
GoPro Hero 12, Oculus Quest 3, Fitbit Charge 6, Sonos Era 100, Roomba j7, Nokia 3310
"""),
    "software": words("""
Windows 11, Photoshop, Excel, Microsoft Teams, Slack, Zoom, WhatsApp, Telegram, Duolingo,
Figma, Notion, Spotify Premium, Google Maps, Android 14, macOS Sonoma, Ubuntu 24.04, Firefox,
Chrome, Minecraft, Fortnite, Tetris, Wikipedia, ChatGPT, AutoCAD, Blender, Linux Mint
"""),
    "vehicle": words("""
Model Y, Model 3, Corolla, Prius, Golf GTI, Civic, Ioniq 5, Leaf, Mustang Mach-E, Defender,
Vespa Primavera, Transit Connect, Boeing 787, Airbus A320, Cybertruck, Polestar 2
"""),
    "other": words("""
Coca-Cola Zero, Red Bull, Nespresso Vertuo, Air Jordan 1, Stanley Cup tumbler, Lego Technic,
Monopoly, Rubik's Cube, Nutella, Heinz ketchup, Dyson V15, Thermomix TM6, Instant Pot
"""),
}

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MONTH_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# ---------------------------------------------------------------------------
# Entity samplers: (rng, kind) -> surface string
# ---------------------------------------------------------------------------

def gen_person(rng: random.Random, kind: str) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    if kind == "first":
        return first
    if kind == "last":
        return last
    if kind == "":  # mostly full names, sometimes with a middle initial
        r = rng.random()
        if r < 0.08:
            return f"{first} {rng.choice('ABCDEFGHJKLMNPRSTW')}. {last}"
        if r < 0.12:
            return f"{first} {rng.choice(LAST_NAMES)}-{last}"
    return f"{first} {last}"


def gen_location(rng: random.Random, kind: str) -> str:
    if kind == "city":
        return rng.choice(CITIES)
    if kind == "country":
        return rng.choice(COUNTRIES)
    if kind == "region":
        return rng.choice(REGIONS)
    r = rng.random()
    if r < 0.5:
        return rng.choice(CITIES)
    if r < 0.8:
        return rng.choice(COUNTRIES)
    if r < 0.95:
        return rng.choice(REGIONS)
    return rng.choice(LANDMARKS)


def _strip_the(name: str) -> str:
    return name[4:] if name.startswith("the ") else name


def gen_org(rng: random.Random, kind: str) -> str:
    if kind == "":
        kind = rng.choices(["company", "intl", "univ", "team", "news", "agency"], [62, 8, 9, 7, 7, 7])[0]
    if kind == "company":
        r = rng.random()
        base = f"{rng.choice(ORG_PREFIX)} {rng.choice(ORG_INDUSTRY)}"
        if r < 0.3:
            return rng.choice(REAL_COMPANIES)
        if r < 0.55:
            return f"{base} {rng.choice(ORG_LEGAL)}"
        if r < 0.62:
            return f"{rng.choice(LAST_NAMES)} & {rng.choice(LAST_NAMES)}"
        if r < 0.7:
            return f"{rng.choice(LAST_NAMES)} {rng.choice(ORG_INDUSTRY)}"
        return base
    if kind == "intl":
        return rng.choice(INTL_ORGS)
    if kind == "science":
        if rng.random() < 0.3:
            return f"{_strip_the(rng.choice(COUNTRIES))} Space Agency"
        return rng.choice(SCIENCE_ORGS)
    if kind == "airline":
        r = rng.random()
        if r < 0.5:
            return rng.choice(AIRLINES)
        if r < 0.75:
            return f"{rng.choice(ORG_PREFIX)} Airlines"
        return f"{rng.choice(ORG_PREFIX)} Air"
    if kind == "team":
        r = rng.random()
        city = rng.choice(CITIES)
        if r < 0.6:
            return f"{city} {rng.choice(TEAM_NICKNAMES)}"
        if r < 0.75:
            return f"FC {city}"
        return rng.choice(REAL_TEAMS)
    if kind == "univ":
        if rng.random() < 0.25:
            return rng.choice(REAL_UNIVS)
        form = rng.choice(UNIV_FORMS)
        return form.format(city=rng.choice(CITIES), last=rng.choice(LAST_NAMES))
    if kind == "news":
        if rng.random() < 0.6:
            return rng.choice(NEWS_ORGS)
        form = rng.choice(["{city} Daily News", "The {city} Herald", "The {city} Post", "{country} Today"])
        return form.format(city=rng.choice(CITIES), country=_strip_the(rng.choice(COUNTRIES)))
    if kind == "agency":
        form = rng.choice(AGENCY_FORMS)
        return form.format(city=rng.choice(CITIES), country=_strip_the(rng.choice(COUNTRIES)))
    raise ValueError(kind)


def gen_product(rng: random.Random, kind: str) -> str:
    if kind == "":
        kind = rng.choices(["device", "software", "vehicle", "other", "brand"], [30, 20, 12, 8, 30])[0]
    if kind == "brand":
        brand = rng.choice(PRODUCT_BRANDS)
        r = rng.random()
        if r < 0.35:
            return f"{brand} {rng.choice(PRODUCT_LINES)} {rng.randint(2, 15)}"
        if r < 0.6:
            return f"{brand} {rng.randint(2, 12)} {rng.choice(PRODUCT_LINES)}"
        if r < 0.8:
            return f"{brand} {rng.choice('XSZGTRK')}{rng.randint(1, 9)}{rng.choice(['', '0', '00'])}"
        return f"{brand} {rng.choice(PRODUCT_LINES)}"
    pool = REAL_PRODUCTS[kind]
    if rng.random() < 0.45:  # fictional models of the same kind
        brand = rng.choice(PRODUCT_BRANDS)
        if kind == "device":
            return f"{brand} {rng.choice(['Phone', 'Tab', 'Book', 'Buds', 'Watch', 'Cam'])} {rng.randint(2, 14)}"
        if kind == "software":
            return f"{brand}{rng.choice(['Desk', 'Chat', 'Notes', 'Sync', 'Pay', 'Maps'])}"
        if kind == "vehicle":
            return f"{brand} {rng.choice(['E', 'GT', 'EV', 'S'])}{rng.randint(1, 9)}"
        return f"{brand} {rng.choice(['Cola', 'Cold Brew', 'Energy', 'Runner', 'Blender'])}"
    return rng.choice(pool)


def gen_date(rng: random.Random, kind: str) -> str:
    year = rng.randint(1988, 2031)
    m = rng.randrange(12)
    day = rng.randint(1, 28)
    if kind == "":
        kind = rng.choices(["on", "in"], [60, 40])[0]
    if kind == "on":
        kind = rng.choices(["mdy", "dmy", "md", "dm", "weekday", "ord", "iso", "abbr"],
                           [20, 18, 18, 10, 16, 8, 5, 5])[0]
    elif kind == "in":
        kind = rng.choices(["year", "monthyear", "month"], [45, 35, 20])[0]
    if kind == "mdy":
        return f"{MONTHS[m]} {day}, {year}"
    if kind == "dmy":
        return f"{day} {MONTHS[m]} {year}"
    if kind == "md":
        return f"{MONTHS[m]} {day}"
    if kind == "dm":
        return f"{day} {MONTHS[m]}"
    if kind == "weekday":
        return rng.choice(WEEKDAYS)
    if kind == "ord":
        return f"{ordinal(day)} of {MONTHS[m]}"
    if kind == "iso":
        return f"{year}-{m + 1:02d}-{day:02d}"
    if kind == "abbr":
        return f"{day} {MONTH_ABBR[m]} {year}"
    if kind == "year":
        return str(year)
    if kind == "monthyear":
        return f"{MONTHS[m]} {year}"
    if kind == "month":
        return MONTHS[m]
    raise ValueError(kind)


GENERATORS = {"P": ("person", gen_person), "O": ("organization", gen_org),
              "L": ("location", gen_location), "D": ("date", gen_date), "R": ("product", gen_product)}

# ---------------------------------------------------------------------------
# Templates. Slots: {P} person, {O} organization, {L} location, {D} date, {R} product,
# optionally with a kind ({P:first}, {L:city}, {D:in}, {O:team}, {R:device}, ...) and
# a digit to tell two slots of one type apart ({P2}, {L2:city}).
# [a|b|c] picks one alternative (non-entity wording); {N} is a small number.
# A template starting with "^" may open a two-sentence record.
# ---------------------------------------------------------------------------

TEMPLATES: dict[str, list[str]] = {
    "news": [
        "{P} was appointed chief executive of {O} on {D:on}, the company said in a statement.",
        "Protesters gathered outside the offices of {O} in {L:city} on {D:weekday}.",
        "The [prime minister|foreign minister|finance minister] of {L:country}, {P}, arrived in {L2:city} for [two days|a week|three days] of talks.",
        "{O:company} [confirmed|announced|denied] on {D:on} that it would cut {N} jobs at its plant near {L:city}.",
        "In {D:in}, {P} became the first woman to lead {O}.",
        "Floods [swept through|hit|devastated] parts of {L} [last month|this week|overnight], and {O:agency} warned of more rain.",
        "Officials in {L:city} said the bridge would reopen on {D:on}.",
        "{P}, a spokesperson for {O}, declined to comment.",
        "The trial of former mayor {P} opened in {L:city} on {D:on}.",
        "According to {O:intl}, inflation in {L:country} rose to {N} percent in {D:monthyear}.",
        "{L:country} and {L2:country} signed a trade agreement in {L3:city} on {D:on}.",
        "Residents of {L:city} were asked to boil their tap water until further notice.",
        "The election, originally planned for {D:on}, was postponed after a court ruling.",
        "{P} told reporters that {O:company} had [no plans|every intention] to leave {L:country}.",
        "A magnitude [5.2|6.1|4.8|7.0] earthquake struck off the coast of {L} early on {D:weekday}.",
        "Firefighters battled a blaze at a warehouse owned by {O:company} for most of the night.",
        "Writing in {O:news}, {P} argued that the new policy would hurt small farmers.",
        "The ceasefire brokered by {O:intl} held for a [second|third|fourth] day.",
    ],
    "chat": [
        "hey {P:first}, are we still on for lunch on {D:weekday}?",
        "just landed in {L:city}, the airport is [huge|tiny|chaos] lol",
        "can you send me the slides before {D:weekday}?",
        "omg {P:first} just bought the {R:device}",
        "{P:first} said the {R} keeps crashing on her",
        "is {P:first} coming to the party or not",
        "I think {P:first} moved to {L:city} in {D:in}",
        "ok I'll call {P:first} after work",
        "did you see what {P:first} posted about {L}?",
        "my sister works at {O} now, she loves it",
        "thx {P:first}!! see you in {L:city}",
        "wait, the concert is on {D:on}?? I thought it was later",
        "honestly the {R:software} update ruined my phone",
        "{P:first} and {P2:first} are driving up to {L} this weekend",
        "happy birthday {P:first}!!! hope {D:year} is your year",
        "anyone know a good dentist near here?",
        "running late, traffic on the bridge is terrible",
        "lol {P:first} thinks {O:team} will win the league",
    ],
    "business": [
        "{O:company} reported a {N} percent rise in quarterly revenue, driven by sales of the {R}.",
        "Shares of {O:company} fell sharply after {P}, its finance chief, resigned on {D:on}.",
        "{O} will open a new office in {L:city} in {D:in}, creating around {N} jobs.",
        "The merger between {O:company} and {O2:company} is expected to close by {D:monthyear}.",
        "{P} founded {O:company} in a garage in {L:city} in {D:year}.",
        "Please send the signed contract to {P} at {O} by {D:on}.",
        "The board of {O:company} approved a dividend of {N} cents per share.",
        "{O:company} is recalling thousands of {R:device} units because of a battery fault.",
        "Our team met with {P} from {O} to discuss the {L:city} expansion.",
        "Starting {D:on}, all invoices must be submitted through {R:software}.",
        "Analysts at {O:company} expect demand for the {R} to slow next year.",
        "The quarterly review has been moved to the larger meeting room.",
        "{O} has hired {P} as head of marketing for {L}.",
        "Revenue in {L} grew faster than in any other region, {P} told investors.",
        "We are pleased to announce that {O:company} has acquired {O2:company} for an undisclosed sum.",
        "The pilot program with {O} ends on {D:on}, after which {P} will present the results.",
    ],
    "sport": [
        "{P} scored twice as {O:team} beat {O2:team} {N:score}-{N2:score} on {D:weekday}.",
        "{O:team} signed striker {P} from {O2:team} on a four-year deal.",
        "The final will be played in {L:city} on {D:on}.",
        "{P:last} equalised in the [12th|34th|58th|71st|89th] minute, but {O:team} held on for a draw.",
        "After winning gold in {L:city}, {P} announced her retirement in {D:in}.",
        "{P} finished the marathon in {L:city} in just over two hours.",
        "Coach {P} praised the defence after a tough away game in {L:city}.",
        "{O:team} have not won a trophy since {D:year}.",
        "The match was abandoned at half-time because of heavy rain.",
        "{P} will miss the {L:country} tour with a hamstring injury.",
        "{P:last} crossed for {P2:last}, who headed in the winner.",
        "Tickets for the derby against {O:team} sold out within an hour.",
        "{P} became the youngest player to captain {O:team} when she led them out on {D:on}.",
        "The cycling race finishes in {L} after {N} stages through {L2:region}.",
    ],
    "travel": [
        "We flew from {L:city} to {L2:city} with {O:airline} and the flight was [delayed|smooth|packed].",
        "The best time to visit {L:region} is between {D:month} and {D2:month}.",
        "Our guide, {P}, grew up in a small village outside {L:city}.",
        "The night train from {L:city} to {L2:city} takes about {N} hours.",
        "I booked a room in {L:city} for the {D:ord} through {R:software}.",
        "Hiking in {L:region} was the highlight of our trip to {L2:country}.",
        "Don't forget your passport and a charger for the {R:device}.",
        "The museum in {L:city} is closed on {D:weekday} and public holidays.",
        "{P:first} recommended a tiny seafood place near the harbour in {L:city}.",
        "We rented a {R:vehicle} and drove along the coast of {L}.",
        "The ferry to the island leaves every morning at eight.",
        "{O:airline} cancelled all flights to {L:city} on {D:on} because of a strike.",
        "From {L:city} it is a short bus ride to {L2}.",
        "We spent {D:in} backpacking through {L:country} and {L2:country}.",
    ],
    "science": [
        "Researchers at {O:univ} have developed a cheaper way to recycle lithium batteries.",
        "The study, led by {P} of {O:univ}, was published on {D:on}.",
        "{O:science} plans to launch the probe from {L} in {D:in}.",
        "{P} and {P2} first described the species in {L:region} in {D:year}.",
        "A team from {O:univ} trained the model on data collected in {L:country} between {D:year} and {D2:year}.",
        "The telescope will observe the comet until {D:monthyear}.",
        "Samples were analysed with a {R} at the lab in {L:city}.",
        "According to {P}, the results still need to be replicated.",
        "The vaccine trial run by {O:company} enrolled volunteers in {L:country}, {L2:country} and {L3:country}.",
        "Dr. {P} presented the findings at a conference in {L:city} on {D:on}.",
        "Climate records from {L} show the warmest {D:month} since measurements began.",
        "The experiment failed twice before the team adjusted the temperature.",
        "{P:last}'s lab at {O:univ} received a grant of {N} million euros in {D:in}.",
        "Professor {P} thinks the glaciers in {L:region} could vanish by {D:year}.",
    ],
    "review": [
        "I have used the {R} for {N} months and the battery still lasts all day.",
        "The {R:device} is lighter than the {R2:device}, but the screen is worse.",
        "{O:company} finally fixed the sync bug in {R:software}.",
        "My {R:vehicle} broke down twice on the way to {L:city}.",
        "Ordered the {R} on {D:on} and it arrived in {L:city} three days later.",
        "Honestly the old {R} was better than this one.",
        "The camera on the {R:device} is great in daylight but noisy at night.",
        "Customer support at {O:company} replied within an hour, which surprised me.",
        "{P} reviewed the {R} for {O:news} and called it overpriced.",
        "Would not recommend, the strap broke after a week.",
        "{R} or {R2}? I can't decide which one to buy.",
        "The {R:software} subscription now costs {N} dollars a month.",
        "{P:first} lent me her {R:device} for the trip to {L}.",
        "Is the {R:device} worth it in {D:year} or should I wait?",
    ],
}

NO_ENTITY_TEMPLATES = [
    "I'll call you back in [ten minutes|an hour|a bit].",
    "The meeting has been moved to [tomorrow morning|next week|after lunch].",
    "Can you pick up some milk on the way home?",
    "The weather has been [terrible|lovely|strange] all week.",
    "Prices went up again [last month|this year|over the summer].",
    "The company said it would [review|publish|update] its policy soon.",
    "She finished the report just before the deadline.",
    "Our flight was delayed by [two hours|forty minutes|half a day].",
    "The new phone has a [bigger|brighter|sharper] screen but a weaker battery.",
    "He scored in the last minute of the game.",
    "The city council will vote on the budget [next week|tomorrow|on Thursday evening].",
    "Researchers say more data is needed before drawing conclusions.",
    "Thanks for the update, talk soon!",
    "The hotel was clean, quiet and close to the station.",
    "Please remember to lock the door when you leave.",
    "lol same, I can't believe it either",
    "The team trained hard all season and it showed.",
    "Sales were flat in the second quarter.",
    "The museum is free on the first [weekend|Sunday morning] of every month.",
    "The river burst its banks after days of heavy rain.",
    "We should probably leave [earlier|before noon|after breakfast] tomorrow.",
    "The software update fixed most of the bugs.",
    "Nobody expected the results to be so clear.",
    "The coach said the players needed a rest.",
    "The bakery on the corner makes the best bread in town.",
    "The minister promised to [answer|address] the question [later|next week].",
    "Battery life is okay, nothing special.",
    "The train was packed [again|as usual] this morning.",
    "good morning everyone!",
    "The report will be published [in the spring|later this year|next month].",
    "I left my charger at the office [yesterday|again].",
    "The storm knocked out power across the region.",
    "Shareholders will meet [in the autumn|next year|later this month].",
    "The experiment needs a much larger sample.",
    "[Breaking|Update]: the [council|regulator|union] has [rejected|accepted|delayed] the [proposal|offer|plan].",
    "The [CEO|chairman|new director] told staff that [bonuses|salaries|budgets] would be [frozen|cut|reviewed].",
    "[Honestly|Frankly|To be fair], the [sequel|second season|new album] was better than I expected.",
    "[My|Our] [laptop|phone|router] stopped working [again|this morning|after the update].",
    "The [striker|goalkeeper|captain] was sent off in the [first|second] half.",
    "[Two|Three|Several] [hikers|climbers|tourists] were rescued from the mountain [overnight|on Sunday night|after a storm].",
    "The [startup|bank|airline] plans to [double|halve|freeze] its workforce [next year|by the summer|within a decade].",
    "[Scientists|Engineers|Doctors] warned that the [drought|heatwave|outbreak] could last [for months|until autumn|much longer].",
    "[Can't wait|So excited|Not ready] for the [holidays|weekend|trip]!",
    "The [village|town|harbour] was [quiet|crowded|flooded] when we arrived.",
    "Please [fill in|sign|return] the [form|survey|agreement] by the end of the [week|month|day].",
    "[The|Our] [landlord|neighbour|manager] [finally|still hasn't] [fixed|replied about] the heating.",
    "The [price|cost|rent] of a [coffee|flat|ticket] in the [capital|city centre|suburbs] keeps rising.",
    "[Passengers|Fans|Visitors] were asked to [arrive early|stay calm|use the side entrance].",
    "The [app|website|printer] crashes every time I [open|print|save] a [file|photo|document].",
    "We [won|lost|drew] the [away game|final|semi-final] [on penalties|by a single goal|in extra time].",
]

N_TEMPLATES = sum(len(v) for v in TEMPLATES.values()) + len(NO_ENTITY_TEMPLATES)

SLOT_RE = re.compile(r"\{([PLODRN])(\d?)(?::(\w+))?\}|\[([^\]]+)\]")

# gliner2's WhitespaceTokenSplitter (gliner2/processing/word_splitter.py), used to check
# that each mention occurs exactly once, token-aligned, case-insensitively.
TOKEN_RE = re.compile(
    r"""(?:https?://[^\s]+|www\.[^\s]+)
    |[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}
    |@[a-z0-9_]+
    |\w+(?:[-_]\w+)*
    |\S""",
    re.VERBOSE | re.IGNORECASE,
)


def tokens(text: str) -> list[str]:
    return [m.group().lower() for m in TOKEN_RE.finditer(text)]


def count_sublist(sub: list[str], seq: list[str]) -> int:
    n = len(sub)
    return sum(1 for i in range(len(seq) - n + 1) if seq[i:i + n] == sub)


def render(template: str, rng: random.Random) -> tuple[str, list[tuple[str, int, str]]] | None:
    """Fill a template; return the text and its (label, start, mention) triples, or None."""
    out: list[str] = []
    mentions: list[tuple[str, int, str]] = []
    used: dict[str, str] = {}
    pos = 0
    cursor = 0
    for m in SLOT_RE.finditer(template):
        out.append(template[pos:m.start()])
        cursor += m.start() - pos
        pos = m.end()
        if m.group(4) is not None:  # [a|b|c]
            piece = rng.choice(m.group(4).split("|"))
            out.append(piece)
            cursor += len(piece)
            continue
        code, idx, kind = m.group(1), m.group(2), m.group(3) or ""
        if code == "N":
            if kind == "score":
                piece = str(rng.randint(0, 5))
            else:
                piece = str(rng.choice([2, 3, 4, 5, 6, 7, 8, 12, 15, 20, 35, 40, 60, 75, 120, 300]))
            out.append(piece)
            cursor += len(piece)
            continue
        label, gen = GENERATORS[code]
        for _ in range(20):
            piece = gen(rng, kind)
            if piece not in used.values():
                break
        else:
            return None
        used[code + idx] = piece
        # Sentence-initial "the X" is capitalised, and stays part of the mention only if it names the entity.
        text_so_far = "".join(out)
        at_start = not text_so_far.strip() or text_so_far.rstrip().endswith((".", "!", "?"))
        if piece.startswith("the "):
            # The article is not part of the mention: "the Netherlands" -> "Netherlands".
            article = "The " if at_start else "the "
            out.append(article)
            cursor += len(article)
            piece = piece[4:]
        out.append(piece)
        mentions.append((label, cursor, piece))
        cursor += len(piece)
    out.append(template[pos:])
    return "".join(out), mentions


def valid(text: str, mentions: list[tuple[str, int, str]]) -> bool:
    toks = tokens(text)
    spans = []
    for label, start, mention in mentions:
        if text[start:start + len(mention)] != mention:
            return False
        mtoks = tokens(mention)
        if not mtoks or len(mtoks) > 7:
            return False
        if count_sublist(mtoks, toks) != 1:
            return False
        # token-aligned: the mention must not start or end inside a word
        if start > 0 and (text[start - 1].isalnum() or text[start].isalnum() and text[start - 1] in "-_"):
            return False
        end = start + len(mention)
        if end < len(text) and text[end].isalnum():
            return False
        spans.append((start, end))
    spans.sort()
    return all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))


def make_record(text: str, mentions: list[tuple[str, int, str]]) -> dict:
    entities: dict[str, list[str]] = {label: [] for label in LABELS}
    for label, _start, mention in sorted(mentions, key=lambda t: t[1]):
        entities[label].append(mention)
    return {"input": text, "output": {"entities": entities}}


def generate(seed: int = DEFAULT_SEED, n: int = DEFAULT_N, neg_rate: float = 0.2,
             pair_rate: float = 0.12) -> list[dict]:
    rng = random.Random(seed)
    registers = list(TEMPLATES)
    # Walk every template at least once before sampling freely, so all frames appear.
    order = [t for r in registers for t in TEMPLATES[r]]
    rng.shuffle(order)
    neg_order = list(NO_ENTITY_TEMPLATES)
    rng.shuffle(neg_order)

    records: list[dict] = []
    seen_texts: set[str] = set()
    attempts = 0
    while len(records) < n:
        attempts += 1
        if attempts > n * 50:
            raise RuntimeError("could not generate enough distinct records")
        if neg_order and rng.random() < 0.5:
            parts = [neg_order.pop()]
        elif order:
            parts = [order.pop()]
        elif rng.random() < neg_rate:
            parts = [rng.choice(NO_ENTITY_TEMPLATES)]
        else:
            parts = [rng.choice(TEMPLATES[rng.choice(registers)])]
        # Some records are two sentences (mixing in a no-entity sentence or another frame).
        if rng.random() < pair_rate:
            if rng.random() < 0.5:
                extra = rng.choice(NO_ENTITY_TEMPLATES)
            else:
                extra = rng.choice(TEMPLATES[rng.choice(registers)])
            if extra[:1].islower() or parts[0][:1].islower():
                pass  # don't glue chat-style lower-case lines into prose
            elif rng.random() < 0.5:
                parts.append(extra)
            else:
                parts.insert(0, extra)
        template = " ".join(parts)
        result = None
        for _ in range(30):
            result = render(template, rng)
            if result is not None and valid(*result):
                break
            result = None
        if result is None:
            continue
        text, mentions = result
        if text in seen_texts:
            continue
        seen_texts.add(text)
        records.append(make_record(text, mentions))
    rng.shuffle(records)
    return records


def dumps(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def stats(records: list[dict]) -> dict:
    per_label = Counter()
    with_entities = 0
    for r in records:
        ents = r["output"]["entities"]
        total = 0
        for label in LABELS:
            per_label[label] += len(ents[label])
            total += len(ents[label])
        with_entities += bool(total)
    lengths = sorted(len(r["input"].split()) for r in records)
    return {
        "records": len(records),
        "with_entities": with_entities,
        "without_entities": len(records) - with_entities,
        "mentions": {label: per_label[label] for label in LABELS},
        "distinct_mentions": {label: len({m for r in records for m in r["output"]["entities"][label]})
                              for label in LABELS},
        "words_per_record": {"min": lengths[0], "median": lengths[len(lengths) // 2], "max": lengths[-1]},
        "templates": N_TEMPLATES,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate the quickstart NER dataset.")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--n", type=int, default=DEFAULT_N, help="number of records")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--stats", action="store_true", help="print dataset statistics as JSON")
    args = ap.parse_args(argv)

    records = generate(args.seed, args.n)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = dumps(records).encode("utf-8")
    args.out.write_bytes(data)
    print(f"wrote {len(records)} records, {len(data)} bytes to {args.out}", file=sys.stderr)
    if args.stats:
        print(json.dumps(stats(records), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
