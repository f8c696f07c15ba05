"""Write the package's bundled sample data (roformer_sim_ft/data/sample_data/).

Every sentence here was written for this project: intents with a few
paraphrase templates and slot values. Pairs from the same intent and slot are
paraphrases; a different slot value or a different intent makes a
non-paraphrase. Nothing is taken from any public data set.

    .venv/bin/python tools/make_sample_data.py   # rewrites the files, deterministically
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "roformer_sim_ft" / "data" / "sample_data"

# ---- intents: (slot values, paraphrase templates). {x} is the slot.
ATEC = [
    (["花呗", "借呗", "备用金"], ["{x}怎么还款", "{x}要怎么还钱", "如何还{x}的钱", "{x}在哪里还款"]),
    (["花呗", "借呗", "备用金"], ["{x}额度怎么提升", "怎样才能提高{x}的额度", "{x}的额度可以提高吗", "我想把{x}额度调高"]),
    (["花呗", "借呗"], ["{x}为什么用不了", "我的{x}怎么不能用了", "{x}突然无法使用是什么原因"]),
    (["花呗", "借呗"], ["怎么关闭{x}", "{x}如何注销", "我不想用{x}了，怎么关掉"]),
    (["花呗", "借呗", "备用金"], ["{x}逾期了会怎么样", "{x}晚还几天有什么后果", "{x}没按时还会影响征信吗"]),
    (["花呗", "借呗"], ["{x}怎么开通", "如何开通{x}", "我想开通{x}，要怎么操作"]),
    (["花呗", "借呗", "备用金"], ["{x}的利息怎么算", "用{x}要付多少利息", "{x}利息是怎么计算的"]),
    (["花呗", "借呗"], ["{x}每个月几号出账单", "{x}账单日是哪一天", "{x}什么时候出账"]),
]

BQ = [
    (["一千", "五千", "两万"], ["借{x}多久能到账", "申请{x}的贷款后什么时候到账", "借了{x}，钱多长时间能打到卡上"]),
    (["一千", "五千", "两万"], ["借{x}一天利息多少钱", "{x}的借款每天要付多少利息", "借{x}的日息是多少"]),
    ([""], ["可以提前还款吗", "我想提前把钱还清", "能不能一次性提前还完", "允许提前结清借款吗"]),
    ([""], ["怎么更换绑定的手机号", "手机号换了怎么修改", "预留手机号怎么改", "绑定的手机号码能换吗"]),
    ([""], ["为什么我的额度这么低", "额度太少了怎么办", "我的可借额度怎么这么少", "给我的额度怎么才这么一点"]),
    ([""], ["还款日会自动扣款吗", "到期了会自动从卡里扣钱吗", "是不是到时间系统会自动扣款", "还款需要我自己操作吗，还是自动扣"]),
    ([""], ["还款的银行卡怎么更换", "我想换一张卡来还款", "怎么修改绑定的还款卡", "能不能换别的银行卡还款"]),
    ([""], ["申请为什么没通过", "借款审核失败是什么原因", "为什么我的申请被拒绝了", "审核没通过是怎么回事"]),
    ([""], ["逾期一天会上征信吗", "晚还一天会影响信用记录吗", "只逾期一天征信会有记录吗", "迟还一天算不算信用污点"]),
    ([""], ["怎么注销账户", "我要把账号注销掉", "账户注销怎么操作", "不用了，怎么把账户销掉"]),
]

LCQMC = [
    (["手机", "电脑", "机票", "运动鞋"], ["哪里可以买到便宜的{x}", "在哪买{x}比较便宜", "买{x}去哪里最划算"]),
    (["红烧肉", "鱼香肉丝", "番茄炒蛋", "饺子"], ["{x}怎么做才好吃", "{x}的家常做法是什么", "怎样做{x}比较好吃"]),
    (["内卷", "躺平", "佛系", "打卡"], ["{x}是什么意思", '"{x}"这个词怎么理解', "请问{x}指的是什么"]),
    (["吉他", "英语", "游泳", "编程"], ["学{x}难不难", "{x}好学吗", "零基础学{x}会很难吗"]),
    (["北京", "成都", "西安", "杭州"], ["{x}有什么好玩的地方", "去{x}旅游哪里好玩", "{x}有哪些值得去的景点"]),
    ([""], ["晚上睡不着怎么办", "失眠了该怎么办", "总是睡不着觉有什么办法"]),
    (["猫", "狗", "兔子"], ["养{x}需要注意什么", "第一次养{x}要注意哪些事", "新手养{x}有什么要注意的"]),
]

# PAWS-X style: the same words in another order. (paraphrase template pair, swapped non-paraphrase)
PAWS_PEOPLE = ["张伟", "李娜", "王强", "陈静", "刘洋"]
PAWS_PLACES = ["上海", "广州", "南京", "武汉", "天津"]
PAWS = [
    ("{a}在{y}年把公司卖给了{b}。", "{y}年，{a}将公司出售给了{b}。", "{b}在{y}年把公司卖给了{a}。"),
    ("{a}是{b}的老师，教了他三年。", "{b}曾经跟着{a}学习了三年。", "{b}是{a}的老师，教了他三年。"),
    ("这部电影由{a}执导，{b}担任主演。", "{b}主演了这部由{a}导演的电影。", "这部电影由{b}执导，{a}担任主演。"),
    ("{a}出生于{c}，后来搬到了{d}。", "{a}在{c}出生，之后移居{d}。", "{a}出生于{d}，后来搬到了{c}。"),
    ("{y}年，{a}接替{b}成为球队的主教练。", "{b}在{y}年被{a}接替，不再担任球队主教练。", "{y}年，{b}接替{a}成为球队的主教练。"),
    ("列车从{c}开往{d}，中途不停站。", "这趟列车由{c}直达{d}。", "列车从{d}开往{c}，中途不停站。"),
]

# STS-B style captions: (specific subject, general subject), (action, related action, general action)
STS_SUBJECTS = [("一个男人", "一个人"), ("一个女人", "一个人"), ("一个男孩", "一个孩子"), ("一个女孩", "一个孩子")]
STS_ACTIONS = [
    ("弹吉他", "弹钢琴", "演奏乐器"),
    ("切洋葱", "切西红柿", "准备食材"),
    ("骑自行车", "推着自行车走", "骑车"),
    ("游泳", "跳水", "运动"),
    ("唱歌", "跳舞", "表演节目"),
    ("遛狗", "给狗洗澡", "照顾狗"),
]

NLI = [
    ("一个穿红衣服的女孩在草地上放风筝。", "一个女孩在户外。", "女孩正在室内睡觉。", "女孩在和她的父亲一起放风筝。"),
    ("两个男人在厨房里做饭。", "有人在准备食物。", "两个男人在游泳。", "两个男人在为晚会做饭。"),
    ("一位老人坐在公园的长椅上看报纸。", "一位老人在看报纸。", "老人正在跑步。", "老人每天早上都来公园。"),
    ("一群孩子在沙滩上堆沙堡。", "孩子们在海边玩。", "孩子们在教室里上课。", "孩子们在参加堆沙堡比赛。"),
    ("一个男人骑着自行车穿过街道。", "一个人在骑车。", "这个男人在开汽车。", "这个男人正骑车去上班。"),
    ("一只棕色的狗在雪地里奔跑。", "一只动物在外面跑。", "狗在沙发上睡觉。", "狗在追一只兔子。"),
    ("一个女人在舞台上弹钢琴。", "有人在演奏乐器。", "女人在舞台下观看演出。", "女人是一名专业钢琴家。"),
    ("几个工人在修建一座桥。", "有人在工作。", "工人们在休假。", "这座桥明年就能通车。"),
    ("一个小男孩在吃冰淇淋。", "一个孩子在吃东西。", "男孩在哭着找妈妈。", "男孩吃的是巧克力冰淇淋。"),
    ("一位医生正在给病人检查身体。", "病人在接受检查。", "医生在家里休息。", "病人得了感冒。"),
    ("两个女孩在图书馆里看书。", "有人在阅读。", "两个女孩在踢足球。", "两个女孩在准备考试。"),
    ("一个厨师在餐厅里切菜。", "有人在使用刀。", "厨师在餐厅外面抽烟。", "餐厅今晚客人很多。"),
    ("一家人在河边野餐。", "一家人在户外吃东西。", "这家人在电影院看电影。", "今天是周末。"),
    ("一名运动员正在跑道上冲刺。", "有人在跑步。", "运动员坐在看台上。", "运动员正在打破纪录。"),
    ("一个男人在雨中撑着伞等公交车。", "外面在下雨。", "男人站在阳光下。", "男人要去见朋友。"),
    ("一个女人正在超市里挑选水果。", "一个人在购物。", "女人在办公室开会。", "女人想买苹果做果汁。"),
    ("学生们在教室里听老师讲课。", "老师在讲课。", "教室里空无一人。", "今天讲的是数学课。"),
    ("一个小女孩抱着一只白色的小猫。", "女孩抱着一只动物。", "女孩在追赶一只狗。", "这只小猫是女孩的生日礼物。"),
    ("一位音乐家在街头拉小提琴。", "有人在演奏音乐。", "音乐家在录音棚里唱歌。", "音乐家在为慈善募捐。"),
    ("一个人正在山顶上拍照。", "有人在山上。", "这个人在海底潜水。", "这个人在拍日出。"),
    ("两个孩子在雪地里堆雪人。", "天气很冷。", "孩子们在游泳池里玩水。", "雪人有一个胡萝卜鼻子。"),
    ("一个女人在阳台上给花浇水。", "一个女人在照顾植物。", "女人在给汽车加油。", "这些花是她上周买的。"),
]
NLI_UNLABELED = [
    ("一个男人在路边看地图。", "这个男人迷路了。"),
    ("一个女孩在窗边画画。", "女孩是一名画家。"),
    ("一群人在广场上跳舞。", "这些人在庆祝节日。"),
    ("一位老奶奶在织毛衣。", "毛衣是给孙子的。"),
]


def paraphrase_pairs(intents, rnd, n_cross=3):
    """(text1, text2, label) pairs: same intent + slot -> 1; other slot or intent -> 0."""
    pos, neg = [], []
    for k, (slots, templates) in enumerate(intents):
        for x in slots:
            for t1, t2 in itertools.combinations(templates, 2):
                pos.append((t1.format(x=x), t2.format(x=x), 1))
            for y in slots:
                if y != x:
                    t1, t2 = rnd.sample(templates, 2)
                    neg.append((t1.format(x=x), t2.format(x=y), 0))
            for _ in range(n_cross):
                other_slots, other_templates = intents[(k + 1 + rnd.randrange(len(intents) - 1)) % len(intents)]
                y = x if x in other_slots else rnd.choice(other_slots)
                neg.append((rnd.choice(templates).format(x=x), rnd.choice(other_templates).format(x=y), 0))
    return pos, neg


def paws_pairs(rnd):
    pos, neg = [], []
    for t_a, t_p, t_n in PAWS:
        for _ in range(10):
            a, b = rnd.sample(PAWS_PEOPLE, 2)
            c, d = rnd.sample(PAWS_PLACES, 2)
            y = rnd.choice([1998, 2005, 2012, 2019])
            kw = dict(a=a, b=b, c=c, d=d, y=y)
            pos.append((t_a.format(**kw), t_p.format(**kw), 1))
            neg.append((t_a.format(**kw), t_n.format(**kw), 0))
    return pos, neg


def sts_pairs(rnd):
    rows = []
    for (subj, gen), (act, rel, gact) in itertools.product(STS_SUBJECTS, STS_ACTIONS):
        base = f"{subj}正在{act}。"
        other_subj = rnd.choice([s for s, _ in STS_SUBJECTS if s != subj])
        other_act = rnd.choice([a for a, _, _ in STS_ACTIONS if a != act])
        rows += [
            (base, f"{subj}在{act}。", 5),
            (base, f"{gen}正在{act}。", 4),
            (base, f"{subj}在{gact}。", 3),
            (base, f"{other_subj}正在{act}。", 2),
            (base, f"{subj}正在{rel}。", 1),
            (base, f"{other_subj}正在{other_act}。", 0),
        ]
    rnd.shuffle(rows)
    return rows


def unique(rows):
    seen, out = set(), []
    for r in rows:
        if r[:2] not in seen and r[0] != r[1]:
            seen.add(r[:2])
            out.append(r)
    return out


def balanced(pos, neg, n, rnd):
    pos, neg = unique(pos), unique(neg)
    rnd.shuffle(pos)
    rnd.shuffle(neg)
    rows = pos[: n // 2] + neg[: n - n // 2]
    rnd.shuffle(rows)
    return rows


def write_senteval(path: Path, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    for r in rows:
        writer.writerow(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_jsonl(path: Path, objs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objs), encoding="utf-8")


def main():
    rnd = random.Random(20210601)
    tasks = {}
    for name, intents in (("ATEC", ATEC), ("BQ", BQ), ("LCQMC", LCQMC)):
        pos, neg = paraphrase_pairs(intents, rnd)
        tasks[name] = balanced(pos, neg, 100, rnd)
    pos, neg = paws_pairs(rnd)
    tasks["PAWSX"] = balanced(pos, neg, 80, rnd)
    tasks["STS-B"] = unique(sts_pairs(rnd))[:100]
    for name, rows in tasks.items():
        n_train = len(rows) * 3 // 5
        folder = OUT / "senteval_cn" / name
        write_senteval(folder / f"{name}.train.data", rows[:n_train])
        write_senteval(folder / f"{name}.valid.data", rows[n_train:])

    nli = []
    for premise, ent, con, neu in NLI:
        nli += [{"sentence1": premise, "sentence2": ent, "gold_label": "entailment"},
                {"sentence1": premise, "sentence2": con, "gold_label": "contradiction"},
                {"sentence1": premise, "sentence2": neu, "gold_label": "neutral"}]
    nli += [{"sentence1": p, "sentence2": h, "gold_label": "-"} for p, h in NLI_UNLABELED]
    rnd.shuffle(nli)
    write_jsonl(OUT / "cnsd" / "cnsd-sample" / "sample.train.jsonl", nli[:50])
    write_jsonl(OUT / "cnsd" / "cnsd-sample" / "sample.dev.jsonl", nli[50:])

    groups = []
    for intents in (ATEC, BQ, LCQMC):
        for slots, templates in intents:
            for x in slots:
                texts = [t.format(x=x) for t in templates]
                groups.append({"text": texts[0], "synonyms": texts[1:]})
    rnd.shuffle(groups)
    write_jsonl(OUT / "synonyms" / "sample.jsonl", groups)
    pos = unique(paws_pairs(rnd)[0])
    write_jsonl(OUT / "synonyms" / "pairs.jsonl", [{"text_a": a, "text_b": b} for a, b, _ in pos[:20]])


if __name__ == "__main__":
    main()
