"""Generate the `intents` demo dataset shipped in `hf_adapt/demo_data/intents/`.

Kept as provenance: the CSV files are committed, so nothing at install or run time calls this.
Every template and slot value below was written for hf_adapt. Re-running it reproduces the
committed files byte for byte (fixed seed):

    python scripts/make_demo_data.py

Validation and test messages come from templates that train never uses, so their scores
measure how well a model handles new phrasings rather than memorised sentence frames.
"""

from __future__ import annotations

import csv
import random
import re
import string
from pathlib import Path

SEED = 20240611
OUT_DIR = Path(__file__).resolve().parents[1] / "hf_adapt" / "demo_data" / "intents"
SPLIT_SIZES = {"train": 60, "validation": 10, "test": 10}  # rows per intent
HELD_OUT_TEMPLATES = 8  # templates per intent reserved for each of validation and test
MIN_WORDS, MAX_WORDS = 3, 20

SLOTS: dict[str, list[str]] = {
    # times and days
    "time": ["6am", "6:30", "7 am", "noon", "9:15", "10pm", "7:05", "3pm", "5:20", "midnight",
             "11", "8:45", "2:30 pm", "9 tonight", "11:30 pm", "half past nine"],
    "wake_time": ["5am", "5:15", "quarter to six", "5:45 a.m.", "6am", "6:10 AM", "6:30",
                  "half six", "6:45", "7 am", "7:05", "seven thirty", "quarter past seven",
                  "4:50 in the morning", "8 o'clock", "8:45", "4:30"],
    "meal_time": ["7pm", "6:30", "7:45", "8 o'clock", "half past six", "12:30", "1pm", "noon",
                  "8:15 tonight", "6"],
    "alarm_day": ["tomorrow", "on monday", "this saturday", "on friday", "on Sunday",
                  "next tuesday", "on thursday", "on wednesday"],
    "day": ["today", "tomorrow", "tonight", "this weekend", "on friday", "this afternoon",
            "on monday", "next week", "later", "this evening", "on Saturday"],
    "weekday": ["monday", "Tuesday", "wednesday", "thursday", "Friday", "saturday", "sunday"],
    "alarm_name": ["gym", "work", "school run", "meds", "yoga", "flight", "early shift",
                   "trash day"],
    "minutes": ["5", "ten", "15", "20", "30"],
    "wait": ["2 hours", "three hours", "an hour", "45 minutes", "90 minutes", "20 minutes"],
    # weather
    "city": ["London", "chicago", "Tokyo", "Berlin", "Lisbon", "Denver", "Nairobi", "austin",
             "Seoul", "Melbourne", "Cape Town", "Montreal", "Oslo", "Mumbai", "Mexico City",
             "Dublin", "phoenix", "Reykjavík", "Singapore", "Buenos Aires", "Seattle", "Cairo",
             "Vancouver", "Manila", "São Paulo"],
    "event": ["game", "bbq", "wedding", "hike", "picnic", "beach day", "garden party",
              "soccer match", "run"],
    # music
    "artist": ["Taylor Swift", "radiohead", "Bad Bunny", "Kendrick Lamar", "Fleetwood Mac",
               "billie eilish", "Miles Davis", "ABBA", "Daft Punk", "Adele", "coldplay",
               "Burna Boy", "Nirvana", "BTS", "Dolly Parton", "Beyoncé", "Stevie Wonder",
               "Arctic Monkeys", "Rosalía", "Bob Marley"],
    "genre": ["lofi", "jazz", "90s hip hop", "classical", "country", "k-pop", "techno", "reggae",
              "acoustic covers", "metal", "bossa nova", "80s synthpop", "afrobeats", "indie rock",
              "blues", "salsa", "drum and bass"],
    "style": ["rock", "pop", "r&b", "disco", "funk", "hip hop", "soul", "dance"],
    "song_by": ["Dancing Queen by ABBA", "Bohemian Rhapsody by Queen", "Hotel California",
                "Billie Jean by Michael Jackson", "Shake It Off", "Yesterday by the Beatles",
                "Superstition by Stevie Wonder", "Wonderwall", "Lose Yourself by Eminem",
                "Despacito", "Take On Me by a-ha", "Dreams by Fleetwood Mac"],
    "album_by": ["Rumours by Fleetwood Mac", "Thriller", "Abbey Road", "Lemonade by Beyoncé",
                 "Back to Black", "Kind of Blue", "Random Access Memories",
                 "Un Verano Sin Ti"],
    "playlist": ["workout", "chill vibes", "road trip", "focus", "sunday morning", "party",
                 "sad girl hours", "throwbacks", "dinner"],
    "activity": ["studying", "cooking", "cleaning the house", "working out", "driving",
                 "reading", "getting ready", "hosting a dinner party", "painting",
                 "doing the dishes"],
    "ambient": ["rain", "ocean wave", "thunderstorm", "forest", "white noise", "campfire"],
    "decade": ["60s", "70s", "80s", "90s", "2000s"],
    "movie": ["Interstellar", "Top Gun", "Frozen", "Pulp Fiction", "The Lion King", "Encanto",
              "Guardians of the Galaxy"],
    "mood": ["upbeat", "mellow", "sad", "romantic", "energetic", "relaxing", "moody"],
    "volume": ["30", "50", "60 percent", "max"],
    # money
    "amount": ["$20", "50 bucks", "€35", "£120", "200 dollars", "15 euros", "$7.50",
               "1,000 dollars", "30 quid", "$65", "$12", "80 euros", "$250", "forty dollars",
               "$9.99", "£45"],
    "person": ["mom", "Dad", "Priya", "Jake", "sarah", "my sister", "Tom", "Aunt Linda", "Carlos",
               "Mei", "my roommate", "Olu", "grandma", "Kevin", "Fatima", "my brother", "Lena"],
    "reason": ["dinner", "the concert tickets", "gas", "the Airbnb", "her birthday gift",
               "the uber", "last weekend", "the phone bill", "the wedding present", "rent"],
    "bill": ["internet bill", "water bill", "dinner bill", "cab fare", "grocery bill"],
    "account": ["savings", "checking", "brokerage", "holiday fund", "emergency"],
    "date": ["1st", "15th", "30th", "5th", "20th"],
    "note": ["thanks!", "rent", "for the tickets", "happy birthday", "gas money"],
    "company": ["the water company", "my credit card", "the gym", "the electric company",
                "my car loan", "the dentist"],
    "relative": ["parents", "cousin", "grandmother", "aunt", "uncle"],
    "country": ["Mexico", "India", "the Philippines", "Nigeria", "Poland", "Vietnam", "Brazil"],
    # food
    "food": ["a large pepperoni pizza", "pad thai", "two cheeseburgers", "sushi",
             "a chicken burrito", "pho", "butter chicken with garlic naan", "a poke bowl",
             "a falafel wrap", "ramen", "a caesar salad", "dumplings", "fish and chips",
             "three tacos", "a veggie lasagna", "wings", "a bacon egg and cheese",
             "chicken tikka masala", "a margherita pizza", "bibimbap", "a gyro", "spring rolls"],
    # dish and place together, so no one orders lasagna from a sushi bar
    "food_from": ["a Big Mac and fries from McDonald's", "a burrito bowl from Chipotle",
                  "pad thai from the thai place on 5th",
                  "a spicy tuna roll from that sushi spot we like",
                  "butter chicken from the usual indian place",
                  "orange chicken from Panda Express", "a large pepperoni from Domino's",
                  "a baconator from Wendy's", "chicken lo mein from Golden Dragon",
                  "lasagna from Luigi's", "al pastor tacos from the taco truck",
                  "a turkey club from the corner deli", "two slices from Joe's pizza"],
    "restaurant": ["Domino's", "the thai place on 5th", "McDonald's", "that sushi spot we like",
                   "Chipotle", "the usual indian place", "Golden Dragon", "Luigi's",
                   "the taco truck", "Wendy's", "Panda Express", "the corner deli"],
    "deliver_place": ["my office", "the house", "my apartment", "work", "the front desk",
                      "my hotel"],
    "people": ["two", "4", "six", "three", "12", "five"],
    "topping": ["cheese", "mushrooms", "jalapeños", "olives", "pineapple", "pepperoni"],
    "cuisine": ["chinese", "Thai", "indian", "Mexican", "italian", "korean", "vietnamese",
                "Ethiopian", "greek", "lebanese"],
    "drink": ["coke", "bubble tea", "iced latte", "lemonade", "mango lassi", "sprite"],
    "breakfast": ["pancakes", "an egg sandwich", "avocado toast", "a breakfast burrito",
                  "a bagel with cream cheese", "waffles"],
    "dessert": ["a slice of cheesecake", "two cinnamon rolls", "crème brûlée", "churros",
                "a pint of ice cream", "brownies"],
    "tip": ["$5", "20 percent", "10%", "$3"],
    "soup": ["tomato soup", "chicken noodle soup", "a big bowl of pho", "ramen", "miso soup"],
    # smart home
    "room": ["living room", "kitchen", "bedroom", "bathroom", "office", "hallway", "garage",
             "kids' room", "basement", "dining room", "guest room"],
    "temp": ["68", "21", "72", "19", "70", "74", "65", "22.5"],
    "percent": ["50%", "20 percent", "30%", "75%", "10 percent", "half"],
    "color": ["blue", "warm yellow", "red", "purple", "soft white", "green", "orange"],
    "degrees": ["2", "three", "5", "a couple of"],
    "door": ["front door", "back door", "garage door", "side gate"],
    "scene": ["movie night", "reading", "bedtime", "dinner party", "good morning", "relax"],
}

TEMPLATES: dict[str, list[str]] = {
    "set_alarm": [
        "set an alarm for {time}",
        "wake me up at {wake_time} {alarm_day}",
        "can you set an alarm for {wake_time} {alarm_day}?",
        "alarm {time} pls",
        "i need to be up by {wake_time} {alarm_day}, set an alarm",
        "Please wake me at {wake_time}, I have an early flight.",
        "set my alarm to {wake_time} every weekday",
        "create an alarm called {alarm_name} for {time}",
        "could you get me up at {wake_time} {alarm_day}? thanks",
        "make an alarm for {time} and label it {alarm_name}",
        "change my {wake_time} alarm to {wake_time2}",
        "move tomorrow's alarm to {wake_time}",
        "snooze the alarm for {minutes} more minutes",
        "wake-up call at {wake_time} please",
        "set a recurring alarm for {time} on {weekday}s",
        "get me up at {wake_time}, it's supposed to snow so I need extra time",
        "alarm for {wake_time} tmrw, gotta catch the bus",
        "set an alarm at {wake_time} so I can order coffee before the rush",
        "need an alarm {alarm_day} at {wake_time} for my dentist appointment",
        "hey can u set alarm {time}",
        "put an alarm on for {time}",
        "I keep oversleeping, set an alarm for {wake_time} and another at {wake_time2}",
        "make sure I'm awake by {wake_time} {alarm_day}",
        "wake me up in {wait}",
        "set two alarms, one at {time} and one at {time2}",
        "Would you mind setting an alarm for {time}?",
        "alarm at {wake_time} with the loudest ringtone you have",
        "i want to wake up at {wake_time} to go running",
        "set my weekend alarm to {wake_time}",
        "early start {alarm_day}, alarm at {wake_time}",
        "wake me up at {wake_time} with some {genre}",
        "can you wake me up at {wake_time}? I have a job interview",
        "new alarm: {time}, {weekday}",
        "I need an alarm at {time} to take my meds",
        "set alarm {time} and name it {alarm_name}",
        "push my alarm back to {wake_time}",
        "don't let me sleep past {wake_time} {alarm_day}",
        "set the alarm clock for {wake_time}",
        "wakeup alarm at {wake_time} on {weekday}",
        "ugh i have to be up at {wake_time}, alarm please",
        "nap time, wake me in {wait}",
        "add an alarm for {time} on weekdays only",
        "alarm tomorrow {wake_time} sharp",
        "my {alarm_name} alarm should go off at {time} from now on",
        "wake me at {wake_time}, no snoozing this time",
        "could you make me an alarm for {wake_time} {alarm_day} please",
        "I'm taking a nap, alarm in {wait} please",
        "set an alarm that goes off at {time} every day",
        "my flight's at 9, get me up at {wake_time}",
        "alarm for {wake_time} and another one {minutes} minutes later",
        "set the {alarm_name} alarm for {time}",
        "I need a wake up alarm at {wake_time} on {weekday}s",
        "yo set an alarm real quick, {time}",
        "reset my alarm for {wake_time} {alarm_day}, I forgot",
        "alarm please, {wake_time} {alarm_day}",
        "can you make my phone ring at {wake_time} to wake me up",
    ],
    "weather": [
        "what's the weather like in {city} today",
        "is it going to rain {day}?",
        "do I need an umbrella {day}",
        "how hot will it get in {city} this weekend",
        "weather forecast for {city} {day}",
        "will it snow in {city} {day}?",
        "what's the temperature outside right now",
        "should i wear a jacket {day}?",
        "is it windy at the beach {day}",
        "hows the weather looking for {weekday}",
        "any chance of thunderstorms {day}?",
        "Could you tell me the forecast for {city} for the next three days?",
        "how cold is it in {city} rn",
        "is it warm enough for a picnic on {weekday}?",
        "will it be sunny {day} in {city}",
        "whats the humidity like in {city}",
        "I'm flying to {city} {day}, what's the weather going to be?",
        "is it gonna be too hot to run at {time} tomorrow",
        "what time does the rain stop in {city} today",
        "Is there a storm warning for {city}?",
        "chance of rain {weekday} afternoon?",
        "will the roads be icy {weekday} morning",
        "what's the UV index in {city} today?",
        "what's the high and low for {city} {day}",
        "do i need sunscreen {day}",
        "is it foggy in {city} right now",
        "tell me the weather for {city}",
        "how much snow is {city} getting {day}",
        "can u check if it'll rain during the {event} {day}",
        "what's the air quality like in {city} today",
        "is it going to freeze {day}? worried about my plants",
        "forecast for {weekday} pls",
        "what's it like outside in {city}",
        "weekend forecast for {city}?",
        "will it clear up before my {event} {day}",
        "it's so cold, how low will the temperature drop {day}?",
        "should I pack a raincoat for {city} {day}",
        "hows the wether in {city}",
        "is it humid in {city} this week",
        "hourly forecast for {weekday} please",
        "what's the feels-like temperature in {city} right now",
        "will there be a heatwave in {city} this week",
        "Is it safe to drive to {city} {day} or is a blizzard coming?",
        "good day for a {event} {day} or will it pour?",
        "how's it looking outside {day}?",
        "rain or shine in {city} {day}?",
        "what's the wind speed in {city} right now",
        "is it going to be cloudy for the {event} {day}",
        "temperature in {city} today?",
        "yo is it hot out in {city}",
        "will I need boots in {city} {day}, is snow in the forecast",
        "what should I expect weather-wise in {city} {day}",
        "is the heatwave in {city} over yet",
        "Does it look like rain for {weekday}'s {event}?",
        "any frost expected {day}?",
        "how many degrees is it outside in {city}",
    ],
    "play_music": [
        "play some {artist}",
        "put on some {genre}",
        "play {song_by} for me",
        "can you play my {playlist} playlist",
        "shuffle my liked songs please",
        "I want to hear something by {artist}",
        "play some {genre} music for {activity}",
        "skip to the next song",
        "play the latest album from {artist}",
        "throw on some {genre}, i'm {activity}",
        "play {ambient} sounds to help me sleep",
        "blast some {genre} in the {room}",
        "Could you play {song_by} please?",
        "i wanna listen to {artist}",
        "start my {playlist} playlist on shuffle",
        "put on {artist} radio",
        "play something chill, it's raining and I'm bored",
        "play {style} from the {decade}",
        "queue up {song_by}",
        "put this song on repeat",
        "play the most popular {artist} songs",
        "play the {genre} station on spotify",
        "music for {activity} please",
        "can u put on some {genre} for dinner",
        "I need some hype music for my workout",
        "play {artist}'s greatest hits",
        "play the soundtrack from {movie}",
        "resume the music where I left off",
        "play something {mood}",
        "turn on some background music while I'm {activity}",
        "let's hear some {genre}",
        "play songs that sound like {artist}",
        "add {song_by} to the queue",
        "I'm in the mood for {artist}",
        "play my discover weekly",
        "play {genre} at volume {volume}",
        "shuffle songs by {artist}",
        "play a random song, surprise me",
        "play some upbeat tunes to get me going this morning",
        "put on the {playlist} playlist in the car",
        "play {song_by} from the beginning",
        "sing me something? jk just play {artist}",
        "i need {mood} music, anything by {artist} works",
        "can we get some {decade} {style} going",
        "play today's top hits",
        "i'd love to hear {song_by}",
        "put on {artist} and turn it up",
        "music please, something {mood}",
        "can you play the whole {album_by} album",
        "play {artist} on the {room} speaker",
        "play some {ambient} noise for the baby",
        "put on a {genre} mix",
        "DJ mode: {genre} all night",
        "go back to the previous song",
        "play {album_by} start to finish",
        "I'm {activity}, play some {artist}",
    ],
    "transfer_money": [
        "send {amount} to {person}",
        "transfer {amount} from checking to savings",
        "pay {person} {amount} for {reason}",
        "venmo {person} {amount}",
        "can you send {person} {amount}?",
        "move {amount} into my {account} account",
        "I owe {person} {amount}, please send it",
        "wire {amount} to {person}'s account",
        "send {person} half of the {bill}",
        "pay my landlord {amount} for rent",
        "send {person} {amount} for the pizza last night",
        "pay {person} back for the concert tickets",
        "please transfer {amount} to {person} by {weekday}",
        "i need to pay {person} back {amount}",
        "schedule a payment of {amount} to {person} on the {date}",
        "send some money to {person}",
        "give {person} {amount} from my account",
        "reimburse {person} {amount} for {reason}",
        "can you move {amount} from savings to checking",
        "transfer {amount} to the joint account",
        "zelle {person} {amount}",
        "set up a monthly transfer of {amount} to {person}",
        "send my roommate {amount} for her half of the electric bill",
        "pay {person} for {reason}, it was {amount}",
        "Kindly transfer {amount} to {person}.",
        "shoot {person} {amount}",
        "send {amount} to {person} with the note '{note}'",
        "put {amount} in {person}'s account",
        "make a payment of {amount} to {company}",
        "pay off {amount} of my credit card",
        "transfer my whole paycheck to savings",
        "send {person} {amount} for the cab",
        "i wanna send {person} some cash, like {amount}",
        "pay the babysitter {amount}",
        "please send {amount} to {person} for the groceries",
        "could you pay {person} what I owe, {amount}",
        "pay {person} back the {amount} they lent me",
        "send {amount} to my {relative} in {country}",
        "move {amount} between my accounts, {account} to checking",
        "split dinner with {person}, send {amount}",
        "pay {person} {amount} now pls",
        "top up {person}'s account with {amount}",
        "can you send {amount} over to {person} real quick",
        "I promised {person} {amount} for {reason}, send it today",
        "send {person} {amount} on venmo for {reason}",
        "pay {company} {amount} from checking",
        "can I transfer {amount} to {person} today",
        "please send {person} the {amount} for {reason}",
        "move money: {amount} to {account}",
        "cash app {person} {amount}",
        "I need to send {amount} abroad to {person}",
        "send my share of the {bill} to {person}, it's {amount}",
        "transfer {amount} to {person} every {weekday}",
        "pay {person} {amount} and add the note '{note}'",
        "e-transfer {amount} to {person}",
        "could you wire {amount} from my {account} account to {person}",
    ],
    "order_food": [
        "order {food_from}",
        "I'm hungry, get me {food}",
        "can you order {food} for delivery",
        "get {food} delivered to {deliver_place}",
        "order my usual from {restaurant}",
        "I'd like to order {food}, please",
        "reorder my last takeout",
        "order {food} for {people} people",
        "can i get {food} delivered by {meal_time}",
        "order dinner from {restaurant} for {meal_time}",
        "{soup} delivered please, it's freezing out",
        "order a pizza with extra {topping}",
        "put in an order for {food_from}",
        "find a place that delivers {cuisine} and order {food}",
        "order lunch for the office, {food} for everyone",
        "food delivery: {food}",
        "can you get me {food_from}? no onions",
        "order {food} and a {drink}",
        "i want {cuisine} food delivered tonight",
        "get {cuisine} takeout for {people}",
        "order breakfast, {breakfast} and a coffee",
        "order {food_from} for pickup",
        "I'm craving {food}, order it",
        "order {food} to {deliver_place}",
        "place an order for {food}",
        "order something cheap for dinner, maybe {cuisine}",
        "can u order {food} asap",
        "get {food_from} here by {meal_time}",
        "order the same thing I got last {weekday}",
        "let's get {food} tonight, can you order it",
        "we're having a movie night, order {food}",
        "order dessert, {dessert}",
        "order {food} and pay with my saved card",
        "deliver {food} to {deliver_place} please",
        "add a {drink} to my {restaurant} order",
        "order {food} and tip the driver {tip}",
        "i need food, {food} sounds good",
        "order vegan {cuisine} food",
        "get me a {drink} and {food_from}",
        "Could you order {food} for me? Thanks so much",
        "order {food} for my lunch break at {meal_time}",
        "schedule a food order from {restaurant} for {weekday} at {meal_time}",
        "order me a late night snack, like {food}",
        "too tired to cook, order {cuisine} for {people} of us",
        "order {food_from} for {people}",
        "hungry af, get {cuisine} delivered",
        "can you get some {cuisine} delivered to {deliver_place} for dinner",
        "I want to order takeout, {food} please",
        "get pizza for the kids' party, {people} large ones",
        "order {food} for delivery at {meal_time}",
        "yo order me {food}",
        "order a family meal from {restaurant}",
        "lunch order please: {food}",
        "book a delivery of {food} for {meal_time}",
        "I'll have {food} delivered, thanks",
        "starving, what can you get me from {restaurant}? order something",
    ],
    "smart_home": [
        "turn on the {room} lights",
        "turn off the lights in the {room}",
        "set the thermostat to {temp}",
        "dim the {room} lights to {percent}",
        "make it warmer in here",
        "it's freezing in here, turn the heat up",
        "turn the AC down to {temp}",
        "switch off all the lights",
        "lights off in the {room} please",
        "set the {room} to {temp} degrees",
        "change the {room} lights to {color}",
        "turn on the porch light at {time}",
        "can you turn down the heating",
        "brighten the lights in the {room}",
        "what's the thermostat set to right now",
        "set the thermostat to {temp} at {time}",
        "turn on the ceiling fan in the {room}",
        "kill the lights in the {room}",
        "make the lights {color} for movie night",
        "lower the temperature in the house by {degrees} degrees",
        "switch the {room} lamp on",
        "turn on the lights, I can't see anything",
        "Please set the heating to {temp} before I get home",
        "open the blinds in the {room}",
        "turn the {room} lights down a bit",
        "is the AC still running upstairs?",
        "make the {room} cooler",
        "put the {room} lights at {percent} brightness",
        "turn every light in the house off at {time}",
        "lock the {door}",
        "turn on eco mode on the thermostat",
        "warm the house up to {temp} by {time}",
        "switch the {room} lights to warm white",
        "its too hot in the {room}, crank the ac",
        "turn off the {room} lights in {minutes} minutes",
        "Could you turn on the lights in the {room}?",
        "set the heat to {temp} for the night",
        "turn off the smart plug in the {room}",
        "lights on in the {room}",
        "make the {room} lights less bright",
        "turn the thermostat off while we're away",
        "activate the {scene} scene",
        "set the {room} lights to {percent} and the heat to {temp}",
        "leave the {room} light on for {person}",
        "turn the heat on in the {room}",
        "set the {room} lights to {color} please",
        "shut off the lights downstairs",
        "can you make the {room} a bit darker",
        "is the {door} locked?",
        "bump the thermostat up {degrees} degrees",
        "turn off the AC, it's cold in here",
        "switch on the {room} heater",
        "goodnight, turn off all the lights and lock the {door}",
        "set the thermostat to {temp} when I leave for work",
        "dim everything to {percent}",
        "turn the {room} fan off",
    ],
}

# Chat-style noise: abbreviations and slips that real users type.
TYPOS: dict[str, list[str]] = {
    "tomorrow": ["tmrw", "tomorow", "2morrow"],
    "please": ["pls", "plz", "pleas"],
    "weather": ["wether", "weathr"],
    "alarm": ["alarn", "alrm"],
    "you": ["u", "yu"],
    "music": ["musik", "muisc"],
    "lights": ["lighs", "lites"],
    "thermostat": ["thermostst", "termostat"],
    "order": ["ordr", "oder"],
    "send": ["snd", "sned"],
    "transfer": ["tranfer", "transfr"],
    "tonight": ["tonite", "2nite"],
    "thanks": ["thx", "ty"],
    "temperature": ["temp", "temprature"],
    "what's": ["whats", "wats"],
    "i'm": ["im", "Im"],
    "right": ["rite"],
    "delivered": ["deliverd"],
    "forecast": ["forcast"],
    "playlist": ["playlst"],
    "account": ["acount"],
}


def template_fields(template: str) -> list[str]:
    """The slot names a template uses, e.g. `["time", "alarm_day"]`."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


def fill(template: str, rng: random.Random) -> str:
    """Fill every slot of `template` with a random value.

    A slot named like another plus "2" (`wake_time2`) draws from the same pool but never
    repeats the first value, so "change my 7 am alarm to 7 am" cannot happen.
    """
    values: dict[str, str] = {}
    for field in sorted(template_fields(template), key=lambda name: name.endswith("2")):
        pool = SLOTS[field.removesuffix("2")]
        values[field] = rng.choice([v for v in pool if v != values.get(field.removesuffix("2"))])
    return template.format(**values)


def add_chat_noise(text: str, rng: random.Random) -> str:
    """Make a clean message look typed: random casing, dropped final punctuation, a typo."""
    words = text.split()
    # A typo in about one message in eight, so most text stays clean.
    candidates = [i for i, word in enumerate(words) if word.lower().strip(",.?!") in TYPOS]
    if candidates and rng.random() < 0.12:
        i = rng.choice(candidates)
        core = words[i].lower().strip(",.?!")
        words[i] = words[i].lower().replace(core, rng.choice(TYPOS[core]))
    text = " ".join(words)
    casing = rng.random()
    if casing < 0.35:
        text = text.lower()
    elif casing < 0.6:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.4:
        text = text.rstrip(".?!")
    return text


def dedupe_key(text: str) -> str:
    """A key that treats case, punctuation and spacing differences as the same text."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def draw(templates: list[str], n: int, seen: set[str], rng: random.Random) -> list[str]:
    """Draw `n` unseen messages, cycling through `templates` so each is used evenly."""
    texts: list[str] = []
    exhausted: set[str] = set()
    while len(texts) < n:
        if len(exhausted) == len(templates):
            raise RuntimeError(f"templates ran out of unique fills after {len(texts)} of {n}: {templates}")
        for template in templates:
            if len(texts) == n or template in exhausted:
                continue
            for _ in range(200):
                clean = fill(template, rng)
                if dedupe_key(clean) not in seen:
                    seen.add(dedupe_key(clean))
                    texts.append(add_chat_noise(clean, rng))
                    break
            else:
                exhausted.add(template)
    return texts


def build_splits(rng: random.Random) -> dict[str, list[tuple[str, str]]]:
    """Per intent, hold out templates for test and validation, then draw each split's rows."""
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLIT_SIZES}
    for label, templates in TEMPLATES.items():
        shuffled = rng.sample(templates, len(templates))
        by_split = {
            "test": shuffled[:HELD_OUT_TEMPLATES],
            "validation": shuffled[HELD_OUT_TEMPLATES : 2 * HELD_OUT_TEMPLATES],
            "train": shuffled[2 * HELD_OUT_TEMPLATES :],
        }
        for split, n in SPLIT_SIZES.items():
            splits[split] += [(text, label) for text in draw(by_split[split], n, seen, rng)]
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def check(splits: dict[str, list[tuple[str, str]]]) -> None:
    """Raise `ValueError` if a split breaks the dataset's promises (sizes, balance, lengths, uniqueness)."""
    problems = []
    all_keys = [dedupe_key(text) for rows in splits.values() for text, _ in rows]
    if len(all_keys) != len(set(all_keys)):
        problems.append("duplicate texts across or within splits")
    for split, rows in splits.items():
        for label in TEMPLATES:
            count = sum(1 for _, row_label in rows if row_label == label)
            if count != SPLIT_SIZES[split]:
                problems.append(f"{split}/{label} has {count} rows, expected {SPLIT_SIZES[split]}")
        problems += [f"{split}: {len(t.split())} words: {t!r}" for t, _ in rows
                     if not MIN_WORDS <= len(t.split()) <= MAX_WORDS]
    if problems:
        raise ValueError("demo data check failed:\n" + "\n".join(problems))


def write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    """Write `text,label` rows as UTF-8 CSV with RFC 4180 quoting and CRLF line endings."""
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main() -> None:
    splits = build_splits(random.Random(SEED))
    check(splits)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        write_csv(OUT_DIR / f"{split}.csv", rows)
        print(f"{split}: {len(rows)} rows -> {OUT_DIR / f'{split}.csv'}")


if __name__ == "__main__":
    main()
